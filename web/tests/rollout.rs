//! The service page's rollout over the in-memory backend: Promote / Pause / Resume / Abort offered to
//! deployers only, CSRF and role checked on the server, core's refusals passed through, the deploy
//! history's outcome column, the waves with their states, the recorded end with its reason, and the deploy
//! form's rollout overrides (a bad one named, nothing deployed).

mod common;

use axum::http::StatusCode;
use cascade_core::api::Role;
use cascade_core::state::{RolloutControl, RolloutCounts};
use cascade_core::{
    Artifact, ClusterName, Command, CommandOutput, CommitSha, Digest, Lease, Region, RepoUrl, ServiceName, WorkerId,
};
use cascade_web::testing::MemoryBackend;
use cascade_web::ConsoleBackend;
use common::{get, post, send_body as send};
use std::sync::Arc;

const TOKENS: [(&str, &str, Role); 2] = [("t-view", "victor", Role::Viewer), ("t-deploy", "dora", Role::Deployer)];

/// Submits, claims and succeeds one build of service `app`; returns its id.
fn succeeded_build(backend: &MemoryBackend, n: u64) -> cascade_core::JobId {
    let submit = Command::SubmitBuild {
        repo: RepoUrl::parse("/srv/git/app.git").expect("repo"),
        commit: CommitSha::parse(format!("{n:040x}")).expect("sha"),
        service: ServiceName::parse("app").expect("service"),
        idempotency_key: None,
    };
    let Ok(CommandOutput::Job(job)) = backend.apply("dora", submit) else { panic!("submit") };
    backend.apply("w1", Command::Claim { worker: WorkerId::parse("w1").expect("worker") }).expect("claim");
    let digest = Digest::parse(format!("{n:064x}")).expect("digest");
    let artifact =
        Artifact { manifest_key: format!("manifests/{digest}.json"), digest, size: 6, deploy: Default::default() };
    backend.apply("w1", Command::Succeed { lease: Lease { job: job.id, attempt: 1 }, artifact }).expect("succeed");
    job.id
}

/// Steps generation `generation` of `app` as the leader's rollout controller does.
fn step(backend: &MemoryBackend, generation: u64) {
    let service = ServiceName::parse("app").expect("service");
    backend.apply("rollout-controller", Command::StepRollout { service, generation }).expect("step");
}

fn report(backend: &MemoryBackend, generation: u64, active: u64) {
    let command = Command::ReportRollout(Box::new(cascade_core::api::RolloutReport {
        service: ServiceName::parse("app").expect("service"),
        generation,
        region: Region::parse("us").expect("region"),
        cluster: ClusterName::parse("c1").expect("cluster"),
        counts: RolloutCounts { total: 4, active, fetching: 4 - active, ..RolloutCounts::default() },
        failures: Default::default(),
        holder: None,
        pending: Vec::new(),
    }));
    backend.apply("worker", command).expect("report");
}

fn control(backend: &MemoryBackend) -> RolloutControl {
    backend.read(|state, _| state.desired[&ServiceName::parse("app").expect("service")].control)
}

#[tokio::test]
async fn rollout_controls_are_for_deployers_checked_and_shown() {
    let backend = Arc::new(MemoryBackend::new(&TOKENS));
    let app = cascade_web::router(backend.clone());
    let (first, second) = (succeeded_build(&backend, 1), succeeded_build(&backend, 2));
    let deploy =
        |build| Command::SetDesiredVersion { service: ServiceName::parse("app").expect("app"), build, rollout: None };
    backend.apply("dora", deploy(first)).expect("deploy 1");
    report(&backend, 1, 0);
    step(&backend, 1);
    report(&backend, 1, 4);
    step(&backend, 1);
    backend.apply("dora", deploy(second)).expect("deploy 2");
    report(&backend, 2, 1);

    let (viewer, viewer_csrf, _) = common::sign_in(&app, "t-view").await;
    let (deployer, csrf, _) = common::sign_in(&app, "t-deploy").await;
    let (_, page) = send(&app, get("/services/app", &viewer)).await;
    assert!(page.contains("data-control=\"running\"") && !page.contains("id=\"controls\""), "{page}");
    let (_, page) = send(&app, get("/services/app", &deployer)).await;
    assert!(page.contains("id=\"pause\"") && page.contains("id=\"abort\"") && !page.contains("id=\"resume\""));
    assert!(page.contains("name=\"generation\" value=\"2\""), "the form names the generation it shows");
    // History: generation 1 completed, generation 2 is under way.
    assert!(page.contains("data-outcome=\"complete\"") && page.contains("4 / 4 active"), "{page}");
    assert!(page.contains("data-outcome=\"in progress\"") && page.contains("1 / 4 active"), "{page}");

    // Refused: no or a wrong CSRF token, a viewer, an older generation, an unknown action.
    for body in ["generation=2&action=pause", "csrf=forged&generation=2&action=pause"] {
        assert_eq!(send(&app, post("/services/app/control", &deployer, body)).await.0, StatusCode::FORBIDDEN);
    }
    let as_viewer = format!("csrf={viewer_csrf}&generation=2&action=abort");
    assert_eq!(send(&app, post("/services/app/control", &viewer, &as_viewer)).await.0, StatusCode::FORBIDDEN);
    let stale = format!("csrf={csrf}&generation=1&action=pause");
    let (status, page) = send(&app, post("/services/app/control", &deployer, &stale)).await;
    assert_eq!(status, StatusCode::CONFLICT, "{page}");
    assert!(page.contains("only the current generation 2"), "core's own reason: {page}");
    let unknown = format!("csrf={csrf}&generation=2&action=explode");
    assert_eq!(send(&app, post("/services/app/control", &deployer, &unknown)).await.0, StatusCode::BAD_REQUEST);
    assert_eq!(control(&backend), RolloutControl::Running, "no refused POST changed anything");

    // Pause shows Resume; Resume shows Pause; Abort is final and offers nothing more.
    for (action, expected, offered) in [
        ("pause", RolloutControl::Paused, "id=\"resume\""),
        ("resume", RolloutControl::Running, "id=\"pause\""),
        ("abort", RolloutControl::Aborted, "Deploy again to start a new rollout"),
    ] {
        let body = format!("csrf={csrf}&generation=2&action={action}");
        assert_eq!(send(&app, post("/services/app/control", &deployer, &body)).await.0, StatusCode::SEE_OTHER);
        assert_eq!(control(&backend), expected, "{action}");
        let (_, page) = send(&app, get("/services/app", &deployer)).await;
        assert!(page.contains(offered), "after {action}: {page}");
    }
    let (_, page) = send(&app, get("/services/app", &deployer)).await;
    assert!(!page.contains("id=\"abort\"") && page.contains("data-outcome=\"aborted\""), "{page}");
    let resume = format!("csrf={csrf}&generation=2&action=resume");
    assert_eq!(send(&app, post("/services/app/control", &deployer, &resume)).await.0, StatusCode::CONFLICT);
}

#[tokio::test]
async fn waves_their_states_the_end_and_promote_are_shown_and_overrides_are_checked() {
    let backend = Arc::new(MemoryBackend::new(&TOKENS));
    let app = cascade_web::router(backend.clone());
    let build = succeeded_build(&backend, 1);
    let (deployer, csrf, _) = common::sign_in(&app, "t-deploy").await;
    let deploy_path = format!("/builds/{build}/deploy");

    // A bad override is named on the build page, the typed values kept, and nothing deployed.
    let bad = format!("csrf={csrf}&waves=%5B%7Bhost+%3D+1%7D%5D&bake_secs=soon");
    let (status, page) = send(&app, post(&deploy_path, &deployer, &bad)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{page}");
    assert!(page.contains("id=\"deploy-error\"") && page.contains("unknown field `host`"), "{page}");
    assert!(page.contains("[{host = 1}]"), "the typed waves are kept: {page}");
    assert!(backend.read(|state, _| state.desired.is_empty()), "a refused deploy deploys nothing");

    // Waves from the form: one host, then the rest after a deployer promotes.
    let waves = "[{hosts = 1}, {percent = 100, approval = \"manual\"}]";
    let body = format!("csrf={csrf}&waves={}&bake_secs=0&failure_budget=0", form_encode(waves));
    let (status, page) = send(&app, post(&deploy_path, &deployer, &body)).await;
    assert_eq!(status, StatusCode::SEE_OTHER, "{page}");
    report(&backend, 1, 0);
    step(&backend, 1);
    let (_, page) = send(&app, get("/services/app", &deployer)).await;
    assert!(page.contains("data-waves=\"2\""), "{page}");
    assert!(page.contains("data-wave=\"1\" data-wave-state=\"open\""), "{page}");
    assert!(page.contains("data-wave=\"2\" data-wave-state=\"waiting\""), "{page}");
    assert!(page.contains("data-admitted=\"1\""), "wave 1 admits one host of 4: {page}");
    assert!(!page.contains("id=\"promote\""), "nothing to promote before wave 1 is healthy");

    // Wave 1 healthy: the rollout waits at the manual wave and offers Promote, naming it.
    report(&backend, 1, 1);
    step(&backend, 1);
    let (_, page) = send(&app, get("/services/app", &deployer)).await;
    assert!(page.contains("data-wave=\"2\" data-wave-state=\"awaiting promote\""), "{page}");
    assert!(page.contains("id=\"promote\"") && page.contains("wave 2 of 2"), "{page}");
    let promote = format!("csrf={csrf}&generation=1&action=promote");
    assert_eq!(send(&app, post("/services/app/control", &deployer, &promote)).await.0, StatusCode::SEE_OTHER);
    let (_, page) = send(&app, get("/services/app", &deployer)).await;
    assert!(page.contains("data-wave=\"1\" data-wave-state=\"done\""), "{page}");
    assert!(page.contains("data-wave=\"2\" data-wave-state=\"open\""), "{page}");
    let (status, page) = send(&app, post("/services/app/control", &deployer, &promote)).await;
    assert_eq!(status, StatusCode::CONFLICT, "a second Promote is refused by core: {page}");

    // Every host healthy: the rollout ends complete, says why, and offers no control.
    report(&backend, 1, 4);
    step(&backend, 1);
    let (_, page) = send(&app, get("/services/app", &deployer)).await;
    assert!(page.contains("id=\"rollout-end\"") && page.contains("data-end=\"complete\""), "{page}");
    assert!(page.contains("all 2 waves healthy"), "the recorded reason: {page}");
    assert!(!page.contains("id=\"pause\"") && !page.contains("id=\"abort\""), "an ended rollout: {page}");
    assert!(page.contains("data-outcome=\"complete\""), "{page}");
}

/// `application/x-www-form-urlencoded` for the few characters the waves use.
fn form_encode(text: &str) -> String {
    text.chars()
        .map(|c| match c {
            ' ' => "+".to_string(),
            c if c.is_ascii_alphanumeric() => c.to_string(),
            c => format!("%{:02X}", c as u32),
        })
        .collect()
}
