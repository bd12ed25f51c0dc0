//! The Cascade web console: server-rendered pages (maud templates, checked at compile time), a little
//! hand-written CSS and JavaScript embedded in the binary, live updates over server-sent events, and the
//! OpenAPI document of `/api/v1`.
//!
//! The console is an axum [`Router`] that every node serves beside `/api/v1`. It reaches the node only
//! through the [`ConsoleBackend`] trait, so this crate depends on `cascade-core` alone. Nothing is loaded
//! from the internet: the console works in an air-gapped datacentre.

pub mod backend;
pub mod openapi;
mod pages;
pub mod session;
pub mod testing;

pub use backend::{BackendError, ConsoleBackend};

use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;
use cascade_core::api::Role;
use session::{Session, Sessions};
use std::sync::Arc;

/// What every console handler shares: the backend and this node's sessions.
pub struct Console<B> {
    /// The node.
    pub backend: Arc<B>,
    /// Signed-in browsers.
    pub sessions: Sessions,
}

type Shared<B> = Arc<Console<B>>;

/// The console's router: pages at `/`, `/builds`, `/builds/{id}`, `/services`, `/services/{name}`,
/// `/cluster`, `/audit`, `/login`; live updates at `/events`; field validation at `/validate`; embedded
/// assets under `/static/`; and `/api/v1/openapi.json`.
pub fn router<B: ConsoleBackend>(backend: Arc<B>) -> Router {
    let console = Arc::new(Console { backend, sessions: Sessions::default() });
    Router::new()
        .route("/", get(|| async { Redirect::to("/builds") }))
        .route("/login", get(pages::auth::login_page).post(pages::auth::login::<B>))
        .route("/logout", post(pages::auth::logout::<B>))
        .route("/builds", get(pages::builds::list::<B>).post(pages::builds::submit::<B>))
        .route("/builds/{id}", get(pages::build::show::<B>))
        .route("/builds/{id}/cancel", post(pages::build::cancel::<B>))
        .route("/builds/{id}/deploy", post(pages::build::deploy::<B>))
        .route("/services", get(pages::service::list::<B>))
        .route("/services/{name}", get(pages::service::show::<B>))
        .route("/services/{name}/rollback", post(pages::service::rollback::<B>))
        .route("/services/{name}/control", post(pages::service::control::<B>))
        .route("/cluster", get(pages::cluster::show::<B>))
        .route("/audit", get(pages::cluster::audit::<B>))
        .route("/events", get(pages::live::events::<B>))
        .route("/validate", get(pages::builds::validate::<B>))
        .route("/static/console.css", get(|| async { asset("text/css; charset=utf-8", CSS) }))
        .route("/static/console.js", get(|| async { asset("text/javascript; charset=utf-8", JS) }))
        .route("/api/v1/openapi.json", get(|| async { axum::Json(openapi::document()) }))
        .with_state(console)
}

const CSS: &str = include_str!("../static/console.css");
const JS: &str = include_str!("../static/console.js");

fn asset(content_type: &'static str, body: &'static str) -> Response {
    ([(header::CONTENT_TYPE, content_type), (header::CACHE_CONTROL, "max-age=300")], body).into_response()
}

/// Why a console request was not served: the browser must sign in first, or an error page with a status.
#[derive(Debug)]
pub enum Reject {
    /// No (live) session: go to the sign-in page.
    SignIn,
    /// An error shown as a page.
    Status(StatusCode, String),
}

impl Reject {
    fn forbidden(detail: impl Into<String>) -> Self {
        Reject::Status(StatusCode::FORBIDDEN, detail.into())
    }
    fn not_found(detail: impl Into<String>) -> Self {
        Reject::Status(StatusCode::NOT_FOUND, detail.into())
    }
}

impl From<BackendError> for Reject {
    fn from(e: BackendError) -> Self {
        let status = StatusCode::from_u16(e.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        Reject::Status(status, e.detail)
    }
}

impl IntoResponse for Reject {
    fn into_response(self) -> Response {
        match self {
            Reject::SignIn => Redirect::to("/login").into_response(),
            Reject::Status(status, detail) => (status, pages::layout::error_page(status, &detail)).into_response(),
        }
    }
}

/// The session of a page request, or a redirect to sign in.
fn session_of<B>(console: &Console<B>, headers: &HeaderMap) -> Result<Arc<Session>, Reject> {
    console.sessions.from_headers(headers).ok_or(Reject::SignIn)
}

/// The session of a form POST that presents `csrf`, whose role allows `needed`; refused (403) otherwise,
/// so a forged cross-site form or a viewer's hand-made request changes nothing.
fn authorize_post<B>(
    console: &Console<B>,
    headers: &HeaderMap,
    csrf: &str,
    needed: Role,
) -> Result<Arc<Session>, Reject> {
    let session = console
        .sessions
        .from_headers(headers)
        .ok_or_else(|| Reject::forbidden("not signed in: sign in again and resubmit the form"))?;
    if !session.csrf_matches(csrf) {
        return Err(Reject::forbidden(
            "the form's anti-forgery token is missing or wrong (reload the page and try again)",
        ));
    }
    if !session.allows(needed) {
        return Err(Reject::forbidden(format!(
            "{} has role {:?}; this needs role {needed:?}",
            session.principal, session.role
        )));
    }
    Ok(session)
}
