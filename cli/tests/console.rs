//! The web console in a real headless Chromium, driven over WebDriver (chromedriver + fantoccini), against
//! real `cascade node` and `cascade worker` processes building a real git repository, and a region manager
//! with two host agents in each of the node's regions (us, eu) rolling the build's small artifact out.
//!
//! Needs Debian's `chromium` and `chromium-driver` (`.ci/run` installs them). Without `chromedriver` on PATH
//! the test says so and passes, unless `CI` is set, where it fails. Screenshots go to `docs/screenshots/`
//! when `CASCADE_SCREENSHOTS=1`, else to the test's temporary directory.

mod common;

use common::agents::AgentProcess;
use common::builds::{local_stores, TestRepo, WorkerProcess};
use common::{free_port, single_node_with, BUILDER, DEPLOYER, VIEWER, WORKER};
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::json;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Regions with a regional store, each with one manager and [`HOSTS_PER_REGION`] hosts.
const REGIONS: [&str; 2] = ["us", "eu"];

/// Hosts per region: enough for a rollout with several hosts, few enough to keep the test fast.
const HOSTS_PER_REGION: usize = 2;

const CHROMIUM_FLAGS: [&str; 10] = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--window-size=1280,1000",
];

/// A chromedriver process, killed when dropped.
struct Driver(Child);

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn on_path(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")
        .and_then(|paths| std::env::split_paths(&paths).map(|dir| dir.join(name)).find(|p| p.is_file()))
}

async fn start_browser(dir: &Path, chromedriver: &Path) -> (Driver, Client) {
    let port = free_port();
    let log = std::fs::File::create(dir.join("chromedriver.log")).expect("chromedriver log");
    let child = Command::new(chromedriver)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("start chromedriver");
    let driver = Driver(child);
    let url = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while http.get(format!("{url}/status")).send().await.is_err() {
        assert!(Instant::now() < deadline, "chromedriver did not answer within 30 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut args: Vec<String> = CHROMIUM_FLAGS.iter().map(|s| s.to_string()).collect();
    args.push(format!("--user-data-dir={}", dir.join("chromium-profile").display()));
    let mut options = json!({ "args": args });
    if let Some(binary) = on_path("chromium") {
        options["binary"] = json!(binary);
    }
    let mut caps = serde_json::Map::new();
    caps.insert("goog:chromeOptions".into(), options);
    let client = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(caps)
        .connect(&url)
        .await
        .expect("start a Chromium session");
    (driver, client)
}

async fn sign_in(c: &Client, base: &str, token: &str) {
    c.goto(&format!("{base}/login")).await.expect("open sign-in");
    c.find(Locator::Css("#token")).await.expect("token field").send_keys(token).await.expect("type token");
    c.find(Locator::Css("#sign-in")).await.expect("sign-in button").click().await.expect("sign in");
    wait_until("the builds page after sign-in", Duration::from_secs(10), || async move {
        c.current_url().await.is_ok_and(|u| u.path() == "/builds")
    })
    .await;
}

/// Polls `check` every 100 ms until it holds; fails after `within`.
async fn wait_until<F, Fut>(what: &str, within: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    while !check().await {
        assert!(Instant::now() < deadline, "not {what} within {within:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn text(c: &Client, css: &str) -> Option<String> {
    c.find(Locator::Css(css)).await.ok()?.text().await.ok()
}

async fn attr(c: &Client, css: &str, name: &str) -> Option<String> {
    c.find(Locator::Css(css)).await.ok()?.attr(name).await.ok()?
}

async fn exists(c: &Client, css: &str) -> bool {
    !c.find_all(Locator::Css(css)).await.expect("query the page").is_empty()
}

/// Clicks the element `css`, finding it again if a live update replaced it between finding and clicking
/// (at most 5 tries).
async fn click(c: &Client, css: &str) {
    for attempt in 1..=5 {
        let clicked = match c.find(Locator::Css(css)).await {
            Ok(element) => element.click().await.map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        match clicked {
            Ok(()) => return,
            Err(e) if attempt == 5 => panic!("cannot click {css}: {e}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

/// Clicks `css` and accepts the confirmation dialog it opens.
async fn click_and_confirm(c: &Client, css: &str) {
    click(c, css).await;
    let deadline = Instant::now() + Duration::from_secs(5);
    while let Err(e) = c.accept_alert().await {
        assert!(Instant::now() < deadline, "{css} opened no confirmation dialog within 5 s: {e}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn screenshot(c: &Client, dir: &Path, name: &str) {
    let png = c.screenshot().await.expect("screenshot");
    std::fs::create_dir_all(dir).expect("screenshot dir");
    std::fs::write(dir.join(format!("{name}.png")), png).expect("write screenshot");
}

/// POSTs a form from inside the signed-in page (same origin, with the session cookie), as a forged form
/// would; returns the HTTP status.
async fn post_from_page(c: &Client, path: &str, body: &str) -> u64 {
    let script = "return fetch(arguments[0], {method: 'POST', credentials: 'same-origin', redirect: 'manual', \
                  headers: {'content-type': 'application/x-www-form-urlencoded'}, body: arguments[1]}).then(r => r.status);";
    let status = c
        .execute(script, vec![json!(path), json!(body)])
        .await
        .unwrap_or_else(|e| panic!("POST {path} with {body:?} from the page: {e}"));
    status.as_u64().unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_builds_watches_and_deploys_in_a_real_browser() {
    let started = Instant::now();
    let Some(chromedriver) = on_path("chromedriver") else {
        assert!(std::env::var_os("CI").is_none(), "CI must install chromium-driver (see scripts/setup.sh)");
        eprintln!("skipping the browser test: no chromedriver on PATH (apt-get install chromium chromium-driver)");
        return;
    };
    // `CASCADE_KEEP_TEST_DIR=1` keeps the logs (node, worker, agents, chromedriver) for a failed run.
    let tmp = tempfile::tempdir().expect("temp dir");
    let (dir, _tmp) = if std::env::var_os("CASCADE_KEEP_TEST_DIR").is_some() {
        let kept = tmp.keep();
        eprintln!("keeping {}", kept.display());
        (kept, None)
    } else {
        (tmp.path().to_path_buf(), Some(tmp))
    };
    let shots = if std::env::var_os("CASCADE_SCREENSHOTS").is_some() {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/screenshots")
    } else {
        dir.join("screenshots")
    };
    let repo = TestRepo::new(&dir);
    let recipe = "[build]\ncommand = \"echo compiling app; sleep 2; mkdir -p out && echo hello > out/app; echo done\"\nartifact = \"out/app\"\n";
    let commit = repo.commit("app", &[("cascade.toml", recipe)]);
    let stores = local_stores(&dir, &REGIONS);
    let node = single_node_with(&dir, 300, &|config| {
        config.stores = Some(stores.clone());
        config.replication.poll_interval_ms = 200;
        config.replication.sync_interval_secs = 1;
    })
    .await;
    let _worker = WorkerProcess::start(&dir, "w1", &[node.spec.addr()], &stores.main, 300);
    // A manager per region (reading the one node) with its hosts; they wait for a deploy.
    let mut agents = Vec::new();
    for region in REGIONS {
        let manager = AgentProcess::manager(&dir, region, &[node.spec.addr()], WORKER, &stores.regions[region]);
        for h in 0..HOSTS_PER_REGION {
            agents.push(AgentProcess::host(&dir, &format!("{region}-host{h}"), manager.addr, false));
        }
        agents.push(manager);
    }
    let hosts = (REGIONS.len() * HOSTS_PER_REGION).to_string();
    let hosts = hosts.as_str();
    let base = node.spec.url();
    let (_driver, client) = start_browser(&dir, &chromedriver).await;
    let c = &client;

    // Not signed in: every page sends the browser to sign in.
    c.goto(&format!("{base}/builds")).await.expect("open builds");
    assert_eq!(c.current_url().await.expect("url").path(), "/login");
    screenshot(c, &shots, "login").await;

    // A builder: the form says exactly what is wrong while typing (core's own message).
    sign_in(c, &base, BUILDER).await;
    assert_eq!(text(c, "#role").await.as_deref(), Some("builder"));
    let expected = cascade_core::CommitSha::parse("abc123").expect_err("short sha").to_string();
    let expected = expected.as_str();
    c.find(Locator::Css("#commit")).await.expect("commit field").send_keys("abc123").await.expect("type");
    wait_until("the commit message shown", Duration::from_secs(10), || async move {
        text(c, "#commit-msg").await.as_deref() == Some(expected)
    })
    .await;
    let commit_field = c.find(Locator::Css("#commit")).await.expect("commit field");
    commit_field.clear().await.expect("clear");
    commit_field.send_keys(commit.as_str()).await.expect("type sha");
    c.find(Locator::Css("#repo")).await.expect("repo").send_keys(&repo.url()).await.expect("type repo");
    c.find(Locator::Css("#service")).await.expect("service").send_keys("hello").await.expect("type service");
    wait_until("the commit message cleared", Duration::from_secs(10), || async move {
        text(c, "#commit-msg").await.as_deref() == Some("")
    })
    .await;
    c.find(Locator::Css("#build")).await.expect("Build button").click().await.expect("submit");
    wait_until("on the new build's page", Duration::from_secs(10), || async move {
        c.current_url().await.is_ok_and(|u| u.path().starts_with("/builds/"))
    })
    .await;
    let url = c.current_url().await.expect("url");
    let id: u64 = url.path().trim_start_matches("/builds/").parse().expect("build id in the URL");

    // The badge turns to succeeded by live update: the marker set on this page survives (no reload).
    c.execute("window.cascadeMarker = 42; return true;", vec![]).await.expect("set marker");
    wait_until("the badge succeeded", Duration::from_secs(120), || async move {
        attr(c, "#status .badge", "data-status").await.as_deref() == Some("succeeded")
    })
    .await;
    let marker = c.execute("return window.cascadeMarker;", vec![]).await.expect("read marker");
    assert_eq!(marker, json!(42), "the page was reloaded instead of updated in place");
    assert!(!exists(c, "#deploy").await, "a builder is offered no Deploy button");
    wait_until("the log and replication shown", Duration::from_secs(30), || async move {
        text(c, "#log").await.is_some_and(|t| t.contains("compiling app"))
            && text(c, "#replication").await.is_some_and(|t| t.matches("replicated").count() >= 2)
    })
    .await;
    assert!(exists(c, "#digest").await && exists(c, "#size").await);
    screenshot(c, &shots, "build").await;
    c.goto(&format!("{base}/builds")).await.expect("open builds");
    let row = format!("tr[data-build=\"{id}\"] .badge");
    assert_eq!(attr(c, &row, "data-status").await.as_deref(), Some("succeeded"));
    screenshot(c, &shots, "builds").await;

    // A deployer: Deploy is enabled for the succeeded build; the desired version shows.
    sign_in(c, &base, DEPLOYER).await;
    c.goto(&format!("{base}/builds/{id}")).await.expect("open build");
    assert_eq!(attr(c, "#deploy", "disabled").await, None, "Deploy is enabled for a succeeded build");
    // A forged POST (no or a wrong anti-forgery token) is refused, even with the deployer's cookie.
    assert_eq!(post_from_page(c, &format!("/builds/{id}/deploy"), "").await, 403);
    assert_eq!(post_from_page(c, &format!("/builds/{id}/deploy"), "csrf=forged").await, 403);
    // Deploy in two waves: one host, then the rest once a deployer promotes (the form's overrides).
    c.find(Locator::Css("#rollout-overrides summary")).await.expect("overrides").click().await.expect("open");
    let waves = "[{hosts = 1}, {percent = 100, approval = \"manual\"}]";
    c.find(Locator::Css("#waves")).await.expect("waves field").send_keys(waves).await.expect("type waves");
    c.find(Locator::Css("#deploy")).await.expect("Deploy button").click().await.expect("deploy");
    wait_until("on the service page", Duration::from_secs(10), || async move {
        c.current_url().await.is_ok_and(|u| u.path() == "/services/hello")
    })
    .await;
    assert_eq!(text(c, "#desired-build").await, Some(format!("#{id}")));
    assert_eq!(text(c, "#generation").await.as_deref(), Some("1"), "exactly one deploy: the forged ones did nothing");

    // Wave 1 (one host) goes live and the page, by live update (the marker survives: no reload), waits at
    // the manual wave with one host active.
    c.execute("window.cascadeMarker = 43; return true;", vec![]).await.expect("set marker");
    let all = "#rollout .progress[data-label=\"all regions\"]";
    wait_until("wave 2 awaiting promote with one host active", Duration::from_secs(120), || async move {
        attr(c, "#waves tr[data-wave=\"2\"]", "data-wave-state").await.as_deref() == Some("awaiting promote")
            && attr(c, all, "data-active").await.as_deref() == Some("1")
    })
    .await;
    assert_eq!(attr(c, "#waves tr[data-wave=\"1\"]", "data-wave-state").await.as_deref(), Some("done"));
    assert!(text(c, "#stage").await.is_some_and(|t| t.contains("Promote")), "{:?}", text(c, "#stage").await);
    screenshot(c, &shots, "service-awaiting-promote").await;

    // Pause, then Resume (each confirmed in a dialog); a control POST without the anti-forgery token is
    // refused.
    assert_eq!(post_from_page(c, "/services/hello/control", "generation=1&action=abort").await, 403);
    click_and_confirm(c, "#pause").await;
    wait_until("the rollout shown paused", Duration::from_secs(10), || async move {
        attr(c, "#control", "data-control").await.as_deref() == Some("paused")
    })
    .await;
    assert!(!exists(c, "#pause").await, "a paused rollout offers Resume, not Pause");
    screenshot(c, &shots, "service-paused").await;
    click_and_confirm(c, "#resume").await;
    wait_until("the rollout shown running", Duration::from_secs(10), || async move {
        attr(c, "#control", "data-control").await.as_deref() == Some("running")
    })
    .await;
    assert!(exists(c, "#pause").await && exists(c, "#abort").await);

    // Promote: every host switches, the rollout ends complete, and an ended rollout offers no control.
    click_and_confirm(c, "#promote").await;
    // The form's POST lands back on the service page, where wave 2 is open; from there on, live updates.
    wait_until("wave 2 open after Promote", Duration::from_secs(10), || async move {
        attr(c, "#waves tr[data-wave=\"2\"]", "data-wave-state").await.as_deref() != Some("awaiting promote")
    })
    .await;
    c.execute("window.cascadeMarker = 44; return true;", vec![]).await.expect("set marker");
    wait_until("every host active in the page", Duration::from_secs(120), || async move {
        attr(c, all, "data-total").await.as_deref() == Some(hosts)
            && attr(c, all, "data-active").await.as_deref() == Some(hosts)
    })
    .await;
    for region in REGIONS {
        let bar = format!("#rollout .progress[data-label=\"{region}\"]");
        let per_region = HOSTS_PER_REGION.to_string();
        assert_eq!(attr(c, &bar, "data-active").await, Some(per_region), "{region}");
    }
    wait_until("the rollout's end complete", Duration::from_secs(30), || async move {
        attr(c, "#rollout-end", "data-end").await.as_deref() == Some("complete")
            && attr(c, "#history tr[data-generation=\"1\"] [data-outcome]", "data-outcome").await.as_deref()
                == Some("complete")
    })
    .await;
    let marker = c.execute("return window.cascadeMarker;", vec![]).await.expect("read marker");
    assert_eq!(marker, json!(44), "the service page was reloaded instead of updated in place");
    wait_until("no control offered for the ended rollout", Duration::from_secs(10), || async move {
        !exists(c, "#pause").await && !exists(c, "#abort").await && !exists(c, "#promote").await
    })
    .await;
    screenshot(c, &shots, "service").await;
    c.goto(&format!("{base}/cluster")).await.expect("open cluster");
    wait_until("the worker listed", Duration::from_secs(10), || async move {
        text(c, "#workers").await.is_some_and(|t| t.contains("w1"))
    })
    .await;
    screenshot(c, &shots, "cluster").await;
    c.goto(&format!("{base}/audit")).await.expect("open audit");
    assert!(text(c, "#audit").await.is_some_and(|t| t.contains("set_desired_version")));
    screenshot(c, &shots, "audit").await;

    // A viewer: no Build form, no Deploy button, and the server refuses the action even with a valid token.
    sign_in(c, &base, VIEWER).await;
    assert!(!exists(c, "#build-form").await, "a viewer is offered no Build form");
    c.goto(&format!("{base}/builds/{id}")).await.expect("open build");
    assert!(!exists(c, "#deploy").await, "a viewer is offered no Deploy button");
    let csrf = attr(c, "input[name=csrf]", "value").await.expect("the sign-out form's token");
    assert_eq!(post_from_page(c, &format!("/builds/{id}/deploy"), &format!("csrf={csrf}")).await, 403);
    c.goto(&format!("{base}/services/hello")).await.expect("open service");
    assert_eq!(attr(c, "#control", "data-control").await.as_deref(), Some("running"));
    assert!(!exists(c, "#controls").await, "a viewer is offered no Pause, Resume or Abort");
    let body = format!("csrf={csrf}&generation=1&action=abort");
    assert_eq!(post_from_page(c, "/services/hello/control", &body).await, 403);
    let status = node
        .client(VIEWER)
        .deployment(&cascade_core::ServiceName::parse("hello").expect("service"))
        .await
        .expect("deployment status");
    let desired = status.desired.expect("desired version");
    assert_eq!(desired.generation, 1, "the viewer's POST changed nothing");
    assert_eq!(desired.control, cascade_core::state::RolloutControl::Running, "nor aborted the rollout");

    // The OpenAPI document is served beside the API.
    let doc: serde_json::Value =
        reqwest::get(format!("{base}/api/v1/openapi.json")).await.expect("openapi").json().await.expect("json");
    assert!(doc["paths"]["/api/v1/builds"]["post"].is_object());
    client.close().await.expect("close the browser");
    drop(agents);
    println!("browser test: {:.1} s", started.elapsed().as_secs_f64());
}
