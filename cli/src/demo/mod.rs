//! `cascade demo`: a whole small Cascade on loopback, from one command, with nothing to configure.
//!
//! Real processes of this same binary (see [`processes`]): 3 voters, a learner for each of 3 regions, 2
//! build workers, a region manager and N hosts per region, local-directory blob stores, a generated CA, and
//! two example git repositories ([`example`]), one per example service: `hello` runs on the first hosts of
//! each region, `greeter` on the others, each a tiny HTTP server on its host's own port. It then submits a
//! first build of each and, with `--deploy`, deploys them and follows the rollouts until every host that
//! runs a service has it healthy. Ctrl-C (or `--deadline`) stops every process, and the services the
//! hosts started, and exits 0.

mod example;
mod layout;
mod processes;
mod walkthrough;

use anyhow::Context;
use cascade_client::Client;
use cascade_core::api::AddMemberRequest;
use cascade_core::Region;
use layout::{Layout, Tokens, MIN_HOSTS_PER_REGION, REGIONS, SERVICES};
use processes::Supervisor;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

/// Options of `cascade demo`.
#[derive(clap::Args, Debug)]
pub struct DemoArgs {
    /// Where everything lives (configs, data, stores, logs); kept between runs.
    /// Default: `$XDG_DATA_HOME/cascade/demo` or `~/.local/share/cascade/demo`.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Delete the data dir first and start a brand-new installation (new tokens, new cluster).
    #[arg(long)]
    fresh: bool,
    /// Deploy the first build as soon as it has succeeded and reached every region.
    #[arg(long)]
    deploy: bool,
    /// First port: nodes use BASE..BASE+5 (TCP), the agents' QUIC BASE+100.. (UDP), Prometheus /metrics of
    /// workers BASE+50.., managers BASE+60.., hosts BASE+400.., and the hosts' services BASE+600.. (TCP).
    #[arg(long, default_value_t = 7001)]
    base_port: u16,
    /// Host agents per region: the first three fifths run `hello`, the others `greeter` (at least one each).
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u16).range(MIN_HOSTS_PER_REGION as i64..=50))]
    hosts_per_region: u16,
    /// Stop everything after this many seconds, as Ctrl-C would (for scripts and tests).
    #[arg(long)]
    deadline: Option<u64>,
}

fn default_data_dir() -> anyhow::Result<PathBuf> {
    if let Some(dir) = std::env::var_os("XDG_DATA_HOME").filter(|d| !d.is_empty()) {
        return Ok(PathBuf::from(dir).join("cascade").join("demo"));
    }
    let home = std::env::var_os("HOME").context("HOME is not set; pass --data-dir")?;
    Ok(PathBuf::from(home).join(".local/share/cascade/demo"))
}

/// Fails with a clear message if a port the demo needs is taken.
fn check_ports(layout: &Layout) -> anyhow::Result<()> {
    anyhow::ensure!(
        layout.last_port() <= u32::from(u16::MAX),
        "--base-port is too high: the demo needs ports up to base + {}",
        layout.last_port() - u32::from(layout.nodes[0].addr.port())
    );
    let (tcp, udp) = layout.ports();
    for port in tcp {
        std::net::TcpListener::bind(("127.0.0.1", port)).map_err(|e| {
            anyhow::anyhow!("TCP port {port} is not free ({e}); is another demo running? Stop it, or pass --base-port")
        })?;
    }
    for port in udp {
        std::net::UdpSocket::bind(("127.0.0.1", port)).map_err(|e| {
            anyhow::anyhow!("UDP port {port} is not free ({e}); is another demo running? Stop it, or pass --base-port")
        })?;
    }
    Ok(())
}

/// Resolves when the user asks to stop (Ctrl-C, SIGTERM) or the deadline passes.
async fn stop_requested(deadline: Option<u64>) -> &'static str {
    let deadline = async {
        match deadline {
            Some(secs) => tokio::time::sleep(Duration::from_secs(secs)).await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = cascade_raft_node::server::shutdown_signal() => "stop requested",
        _ = deadline => "deadline reached",
    }
}

/// `cascade demo`
pub async fn run(args: DemoArgs) -> anyhow::Result<ExitCode> {
    let data_dir = match args.data_dir.clone() {
        Some(dir) => dir,
        None => default_data_dir()?,
    };
    if args.fresh && data_dir.exists() {
        std::fs::remove_dir_all(&data_dir)
            .with_context(|| format!("cannot delete {} for --fresh", data_dir.display()))?;
    }
    std::fs::create_dir_all(&data_dir).with_context(|| format!("cannot create {}", data_dir.display()))?;
    // Absolute: a service's `activate` runs in its release dir and starts `$CASCADE_RELEASE/<name>`.
    let data_dir = data_dir.canonicalize().with_context(|| format!("cannot resolve {}", data_dir.display()))?;
    let layout = Layout::new(data_dir.clone(), args.base_port, usize::from(args.hosts_per_region));
    // A demo that was killed (not stopped) leaves its services running on their ports; its other processes
    // went with it. While the nodes' ports are taken this installation may be running: leave it be.
    let nodes_free = layout.nodes.iter().all(|n| std::net::TcpListener::bind(n.addr).is_ok());
    if nodes_free {
        let left = processes::stop_services(&layout.all_host_dirs(), Duration::from_secs(5));
        if !left.is_empty() {
            println!("stopped {} services a previous run left running", left.len());
        }
    }
    check_ports(&layout)?;
    let tokens = Tokens::load_or_create(&data_dir.join("tokens.json"))?;
    let mut commits = Vec::new();
    for (i, service) in SERVICES.iter().enumerate() {
        commits.push(example::ensure_repo(&layout.example_repo(i), service)?);
    }
    layout.ensure_certs()?;
    let specs = layout.write_configs(&tokens)?;
    let exe = std::env::current_exe().context("cannot find the cascade binary to start the demo's processes")?;
    let mut supervisor = Supervisor::new(exe, &data_dir.join("logs"))?;

    println!("Cascade demo in {} (logs in {}/logs)", data_dir.display(), data_dir.display());
    let stop = stop_requested(args.deadline);
    tokio::pin!(stop);
    let nodes = layout.nodes.len();
    for spec in &specs[..nodes] {
        supervisor.start(spec)?;
    }
    let ready = tokio::select! {
        ready = form_cluster(&layout, &tokens) => Some(ready),
        why = &mut stop => { println!("{why} while the cluster was forming"); None }
    };
    if let Some(ready) = ready {
        ready?;
        for spec in &specs[nodes..] {
            supervisor.start(spec)?;
        }
        print_welcome(&layout, &tokens);
        write_summary(&layout, &tokens, &supervisor, &commits)?;
        let walk = walkthrough::first_build(&layout, &tokens, &commits, args.deploy);
        tokio::pin!(walk);
        let mut walking = true;
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        loop {
            tokio::select! {
                why = &mut stop => { println!("{why}: stopping every process"); break; }
                result = &mut walk, if walking => {
                    walking = false;
                    if let Err(e) = result {
                        println!("the first build's walkthrough stopped: {e:#}");
                    }
                }
                _ = tick.tick() => {
                    for (name, status, log) in supervisor.reap() {
                        println!("warning: {name} exited ({status}); its log: {}", log.display());
                    }
                }
            }
        }
    }
    let killed = supervisor.stop_all(Duration::from_secs(15));
    if !killed.is_empty() {
        println!("killed after 15 s without exiting: {}", killed.join(", "));
    }
    // After the agents: none of them can start a service again meanwhile.
    let services = processes::stop_services(&layout.all_host_dirs(), Duration::from_secs(5));
    if !services.is_empty() {
        println!("stopped {} services the hosts had started", services.len());
    }
    println!("stopped; `cascade demo` again resumes this installation, `cascade demo --fresh` starts over");
    Ok(ExitCode::SUCCESS)
}

/// Waits for the nodes, initializes the cluster once and adds the learners it lacks (membership is checked
/// first: every add commits a membership entry).
async fn form_cluster(layout: &Layout, tokens: &Tokens) -> anyhow::Result<()> {
    let urls = layout.urls();
    let voters: Vec<String> = urls[..layout::VOTERS as usize].to_vec();
    let admin = Client::new(&voters, &tokens.admin)?.with_retry_budget(Duration::from_secs(30));
    let http = reqwest::Client::new();
    for url in &urls {
        let mut healthy = false;
        for _ in 0..300 {
            if http.get(format!("{url}/healthz")).send().await.is_ok_and(|r| r.status().is_success()) {
                healthy = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        anyhow::ensure!(healthy, "node at {url} did not start within 30 s; see its log in logs/");
    }
    let marker = layout.data_dir.join("cluster-initialized");
    if !marker.exists() {
        Client::new(&voters[..1], &tokens.admin)?.cluster_init().await.context("cannot initialize the demo cluster")?;
        std::fs::write(&marker, b"")?;
    }
    let mut status = None;
    for _ in 0..300 {
        if let Ok(s) = admin.cluster_status().await {
            if s.leader.is_some() {
                status = Some(s);
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let status = status.context("the demo cluster elected no leader within 30 s; see logs/node*.log")?;
    for node in layout.nodes.iter().filter(|n| !n.voter) {
        if status.members.iter().any(|m| m.id == node.id) {
            continue;
        }
        let request = AddMemberRequest {
            id: node.id,
            addr: node.addr.to_string(),
            region: Region::parse(node.region.clone())?,
            voter: false,
        };
        admin.add_member(&request).await.with_context(|| format!("cannot add learner {}", node.id))?;
    }
    Ok(())
}

fn print_welcome(layout: &Layout, tokens: &Tokens) {
    println!();
    println!("  console   {}", layout.console_url());
    println!("  sign in with one of these tokens:");
    println!("    viewer    {}", tokens.viewer);
    println!("    builder   {}", tokens.builder);
    println!("    deployer  {}", tokens.deployer);
    println!("    admin     {}", tokens.admin);
    println!(
        "  running: {} voters, {} learners ({}), {} workers, {} managers, {} hosts",
        layout::VOTERS,
        REGIONS.len(),
        REGIONS.join(", "),
        layout::WORKERS,
        REGIONS.len(),
        REGIONS.len() * layout.hosts_per_region
    );
    println!("  example services (each host runs one, on its own port; `env` in config/<host>.toml):");
    for (i, service) in SERVICES.iter().enumerate() {
        let hosts = layout.hosts_of(i);
        let (region, host) = hosts[0];
        println!(
            "    {:<9} {} hosts (pool = \"{}\"), e.g. curl {}  ({})",
            service.name,
            hosts.len(),
            service.pool,
            layout.service_url(region, host),
            Layout::host_name(region, host)
        );
    }
    println!("  Prometheus metrics (one of each kind; ports in config/*.toml):");
    for (kind, url) in layout.metrics_urls() {
        println!("    {kind:<9} {url}");
    }
    println!("  from another terminal:");
    println!("    export CASCADE_SERVER={} CASCADE_TOKEN={}", layout.urls()[0], tokens.deployer);
    println!("    cascade status; cascade build list; cascade status --service {}", SERVICES[0].name);
    println!("  Ctrl-C stops everything.");
    println!();
}

/// `demo.json`: the console URL, tokens, process ids, and each example service's repository, commit and
/// hosts with their URLs, for scripts and tests.
fn write_summary(layout: &Layout, tokens: &Tokens, supervisor: &Supervisor, commits: &[String]) -> anyhow::Result<()> {
    let mut services = serde_json::Map::new();
    for (i, service) in SERVICES.iter().enumerate() {
        let hosts: serde_json::Map<String, serde_json::Value> = layout
            .hosts_of(i)
            .into_iter()
            .map(|(r, h)| (Layout::host_name(r, h), layout.service_url(r, h).into()))
            .collect();
        services.insert(
            service.name.to_string(),
            serde_json::json!({
                "repo": format!("file://{}", layout.example_repo(i).display()),
                "commit": commits[i],
                "pool": service.pool,
                "hosts": hosts,
            }),
        );
    }
    let summary = serde_json::json!({
        "console": layout.console_url(),
        "servers": layout.urls(),
        "tokens": tokens,
        "services": services,
        "pids": supervisor.pids(),
        "metrics": layout.metrics_urls().into_iter().collect::<std::collections::BTreeMap<_, _>>(),
    });
    let path = layout.data_dir.join("demo.json");
    std::fs::write(&path, serde_json::to_vec_pretty(&summary)?)
        .with_context(|| format!("cannot write {}", path.display()))
}
