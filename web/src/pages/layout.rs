//! The frame around every page: navigation, who is signed in, the sign-out form.

use crate::session::Session;
use axum::http::StatusCode;
use maud::{html, Markup, DOCTYPE};

/// Lower-case role name as shown to people.
pub fn role_name(role: cascade_core::api::Role) -> String {
    format!("{role:?}").to_lowercase()
}

/// The hidden field every form carries (checked on POST).
pub fn csrf_field(session: &Session) -> Markup {
    html! { input type="hidden" name="csrf" value=(session.csrf); }
}

/// A whole page: `body` inside the navigation frame.
pub fn page(title: &str, session: Option<&Session>, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · Cascade" }
                link rel="stylesheet" href="/static/console.css";
                script src="/static/console.js" defer {}
            }
            body {
                header.top {
                    a.brand href="/builds" { "Cascade" }
                    @if let Some(session) = session {
                        nav {
                            a href="/builds" { "Builds" }
                            a href="/services" { "Services" }
                            a href="/cluster" { "Cluster" }
                            a href="/audit" { "Audit" }
                        }
                        span.who {
                            span #principal { (session.principal) }
                            " · "
                            span #role { (role_name(session.role)) }
                        }
                        form.inline method="post" action="/logout" {
                            (csrf_field(session))
                            button.link type="submit" { "Sign out" }
                        }
                    }
                    span #live-status title="live updates" {}
                }
                main { (body) }
            }
        }
    }
}

/// The page shown for a refused or failed request.
pub fn error_page(status: StatusCode, detail: &str) -> Markup {
    page(
        status.canonical_reason().unwrap_or("Error"),
        None,
        html! {
            h1 { (status.as_u16()) " " (status.canonical_reason().unwrap_or("")) }
            p.error #error { (detail) }
            p { a href="/builds" { "Back to the console" } " · " a href="/login" { "Sign in" } }
        },
    )
}
