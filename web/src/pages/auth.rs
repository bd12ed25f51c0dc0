//! Signing in with a token and out again.

use super::layout::page;
use crate::session::{clear_cookie, set_cookie};
use crate::{ConsoleBackend, Reject, Shared};
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::Form;
use maud::{html, Markup};
use serde::Deserialize;

fn login_form(error: Option<&str>) -> Markup {
    page(
        "Sign in",
        None,
        html! {
            h1 { "Sign in" }
            p { "Paste the token you were given (the node's config names it and its role)." }
            @if let Some(error) = error { p.error #error { (error) } }
            form.card method="post" action="/login" {
                label for="token" { "Token" }
                input #token type="password" name="token" autocomplete="current-password" required;
                button #sign-in type="submit" { "Sign in" }
            }
        },
    )
}

/// `GET /login`
pub async fn login_page() -> Markup {
    login_form(None)
}

/// The sign-in form's fields.
#[derive(Deserialize)]
pub struct LoginForm {
    token: String,
}

/// `POST /login`: a known token starts a session. No CSRF token exists before sign-in; the SameSite=Strict
/// cookie it sets is what protects later forms.
pub async fn login<B: ConsoleBackend>(State(console): State<Shared<B>>, Form(form): Form<LoginForm>) -> Response {
    match console.backend.authenticate(form.token.trim()) {
        Some((principal, role)) => {
            let id = console.sessions.create(principal, role);
            ([(header::SET_COOKIE, set_cookie(&id))], Redirect::to("/builds")).into_response()
        }
        None => (StatusCode::UNAUTHORIZED, login_form(Some("Unknown token."))).into_response(),
    }
}

/// The sign-out form's fields.
#[derive(Deserialize)]
pub struct LogoutForm {
    #[serde(default)]
    csrf: String,
}

/// `POST /logout`
pub async fn logout<B: ConsoleBackend>(
    State(console): State<Shared<B>>,
    headers: HeaderMap,
    Form(form): Form<LogoutForm>,
) -> Result<Response, Reject> {
    crate::authorize_post(&console, &headers, &form.csrf, cascade_core::api::Role::Viewer)?;
    console.sessions.remove(&headers);
    Ok(([(header::SET_COOKIE, clear_cookie())], Redirect::to("/login")).into_response())
}
