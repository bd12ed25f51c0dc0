//! Render time of the build list with 10,000 builds in the state: the real router over the in-memory
//! backend, signed in, `GET /builds` (first page, and a filter that matches rarely). Prints figures; asserts
//! nothing. Run: `cargo run --release -p cascade-web --example render-bench`.

use axum::body::Body;
use axum::http::{header, Request};
use cascade_core::api::Role;
use cascade_core::{Command, CommitSha, RepoUrl, ServiceName};
use cascade_web::testing::MemoryBackend;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tower::ServiceExt;

const BUILDS: u64 = 10_000;
const ROUNDS: usize = 200;

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let backend = Arc::new(MemoryBackend::new(&[("t", "victor", Role::Viewer)]));
    for n in 1..=BUILDS {
        let service = if n % 100 < 1 { "rare" } else { "app" };
        let command = Command::SubmitBuild {
            repo: RepoUrl::parse("/srv/git/app.git").expect("repo"),
            commit: CommitSha::parse(format!("{n:040x}")).expect("sha"),
            service: ServiceName::parse(service).expect("service"),
            idempotency_key: None,
        };
        backend.apply("alice", command).expect("submit");
    }
    let app = cascade_web::router(backend);
    let login = Request::post("/login")
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(Body::from("token=t"))
        .expect("request");
    let response = app.clone().oneshot(login).await.expect("login");
    let cookie = response.headers()[header::SET_COOKIE].to_str().expect("ascii").split(';').next().expect("cookie");
    let cookie = cookie.to_string();
    println!("build list render time, {BUILDS} builds in the state, {ROUNDS} requests each:");
    for path in ["/builds", "/builds?service=rare", "/builds?status=failed"] {
        let mut times: Vec<Duration> = Vec::with_capacity(ROUNDS);
        let mut size = 0;
        for _ in 0..ROUNDS {
            let request = Request::get(path).header(header::COOKIE, &cookie).body(Body::empty()).expect("request");
            let started = Instant::now();
            let response = app.clone().oneshot(request).await.expect("page");
            let body = axum::body::to_bytes(response.into_body(), 1 << 24).await.expect("body");
            times.push(started.elapsed());
            size = body.len();
        }
        times.sort();
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        println!(
            "  GET {path:<24} median {:.3} ms, p95 {:.3} ms, max {:.3} ms, page {size} bytes",
            ms(times[ROUNDS / 2]),
            ms(times[ROUNDS * 95 / 100]),
            ms(times[ROUNDS - 1])
        );
    }
}
