//! The console's router over the in-memory backend: sign-in, roles, CSRF, validation and paging.

mod common;

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use axum::Router;
use cascade_core::api::Role;
use cascade_core::{Command, CommitSha, RepoUrl, ServiceName};
use cascade_web::testing::MemoryBackend;
use cascade_web::ConsoleBackend;
use common::{get, post};
use std::sync::Arc;
use tower::ServiceExt;

const TOKENS: [(&str, &str, Role); 3] =
    [("t-view", "victor", Role::Viewer), ("t-build", "alice", Role::Builder), ("t-deploy", "dora", Role::Deployer)];

fn console() -> (Arc<MemoryBackend>, Router) {
    let backend = Arc::new(MemoryBackend::new(&TOKENS));
    (backend.clone(), cascade_web::router(backend))
}

fn submit(backend: &MemoryBackend, n: u64) {
    let command = Command::SubmitBuild {
        repo: RepoUrl::parse("/srv/git/app.git").expect("repo"),
        commit: CommitSha::parse(format!("{n:040x}")).expect("sha"),
        service: ServiceName::parse(if n % 2 == 1 { "web" } else { "api" }).expect("service"),
        idempotency_key: None,
    };
    backend.apply("alice", command).expect("submit");
}

async fn send(app: &Router, request: Request<Body>) -> (StatusCode, Option<String>, String) {
    let response = app.clone().oneshot(request).await.expect("router answers");
    let status = response.status();
    let location = response.headers().get(header::LOCATION).map(|v| v.to_str().unwrap_or_default().to_string());
    let cookie = response.headers().get(header::SET_COOKIE).map(|v| v.to_str().unwrap_or_default().to_string());
    let body = axum::body::to_bytes(response.into_body(), 1 << 24).await.expect("body");
    let body = String::from_utf8_lossy(&body).into_owned();
    (status, location.or(cookie), body)
}

/// Signs in; returns the session cookie (`name=value`) and the page's CSRF token.
async fn sign_in(app: &Router, token: &str) -> (String, String) {
    let (cookie, csrf, set) = common::sign_in(app, token).await;
    assert!(set.contains("HttpOnly") && set.contains("SameSite=Strict"), "{set}");
    (cookie, csrf)
}

#[tokio::test]
async fn pages_need_a_session_and_unknown_tokens_are_refused() {
    let (_, app) = console();
    let (status, location, _) = send(&app, Request::get("/builds").body(Body::empty()).expect("req")).await;
    assert_eq!((status, location.as_deref()), (StatusCode::SEE_OTHER, Some("/login")));
    let bad = Request::post("/login")
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(Body::from("token=nope"))
        .expect("req");
    assert_eq!(send(&app, bad).await.0, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn roles_decide_what_is_offered_and_what_is_accepted() {
    let (backend, app) = console();
    let (viewer, viewer_csrf) = sign_in(&app, "t-view").await;
    let (builder, builder_csrf) = sign_in(&app, "t-build").await;
    let (deployer, deployer_csrf) = sign_in(&app, "t-deploy").await;
    assert!(!send(&app, get("/builds", &viewer)).await.2.contains("id=\"build-form\""));
    assert!(send(&app, get("/builds", &builder)).await.2.contains("id=\"build-form\""));

    let form = format!("repo=%2Fsrv%2Fgit%2Fapp.git&commit={}&service=api", "a".repeat(40));
    // Forged: no token, a wrong token, another session's token.
    for csrf in ["", "csrf=forged&", &format!("csrf={deployer_csrf}&")] {
        assert_eq!(send(&app, post("/builds", &builder, &format!("{csrf}{form}"))).await.0, StatusCode::FORBIDDEN);
    }
    assert_eq!(
        send(&app, post("/builds", &viewer, &format!("csrf={viewer_csrf}&{form}"))).await.0,
        StatusCode::FORBIDDEN
    );
    assert_eq!(backend.read(|s, _| s.jobs.len()), 0, "no refused POST queued anything");
    let (status, location, _) = send(&app, post("/builds", &builder, &format!("csrf={builder_csrf}&{form}"))).await;
    assert_eq!((status, location.as_deref()), (StatusCode::SEE_OTHER, Some("/builds/0")));

    // Invalid input comes back with core's exact message.
    let (status, _, page) =
        send(&app, post("/builds", &builder, &format!("csrf={builder_csrf}&repo=%2Fr&commit=abc&service=api"))).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let expected = CommitSha::parse("abc").expect_err("short").to_string();
    assert!(page.contains(&expected), "{page}");
    let (_, _, answer) = send(&app, get("/validate?field=commit&value=abc", &builder)).await;
    assert!(answer.contains(&expected), "{answer}");

    // A queued build: Deploy is offered to the deployer, disabled, with the reason.
    let (_, _, page) = send(&app, get("/builds/0", &deployer)).await;
    assert!(page.contains("id=\"deploy\"") && page.contains("disabled"), "{page}");
    assert!(page.contains("only a succeeded build can be deployed"));
    assert!(!send(&app, get("/builds/0", &viewer)).await.2.contains("id=\"deploy\""));
    let refused = send(&app, post("/builds/0/deploy", &deployer, &format!("csrf={deployer_csrf}"))).await;
    assert_eq!(refused.0, StatusCode::BAD_REQUEST, "the state machine refuses deploying a queued build");
}

#[tokio::test]
async fn build_list_is_paged_newest_first_and_filtered() {
    let (backend, app) = console();
    for n in 1..=120 {
        submit(&backend, n);
    }
    let (cookie, _) = sign_in(&app, "t-view").await;
    let (_, _, page) = send(&app, get("/builds", &cookie)).await;
    assert_eq!(page.matches("<tr data-build=").count(), 50);
    assert!(page.contains("data-build=\"119\"") && !page.contains("data-build=\"69\""));
    assert!(page.contains("/builds?before=70"), "next page link");
    let (_, _, page) = send(&app, get("/builds?service=web&before=11", &cookie)).await;
    assert_eq!(page.matches("<tr data-build=").count(), 6, "ids 0, 2, 4, 6, 8, 10 are service web");
    let (_, _, page) = send(&app, get("/builds?status=succeeded", &cookie)).await;
    assert!(page.contains("No builds match."));
}

#[tokio::test]
async fn openapi_document_is_served() {
    let (_, app) = console();
    let (status, _, body) = send(&app, Request::get("/api/v1/openapi.json").body(Body::empty()).expect("req")).await;
    assert_eq!(status, StatusCode::OK);
    let doc: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert_eq!(doc["openapi"], "3.1.0");
}
