//! The service page's rollout controls over the in-memory backend: Pause / Resume / Abort offered to
//! deployers only, CSRF and role checked on the server, core's refusals passed through, and the deploy
//! history's outcome column.

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
    report(&backend, 1, 4);
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
