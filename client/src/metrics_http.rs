//! A tiny `/metrics` HTTP server for the processes that have no HTTP server of their own (the worker and the
//! region agents), so that every kind of Cascade process can be scraped by Prometheus the same way the node is.
//!
//! The caller owns its metrics (usually a `prometheus_client` registry) and hands in a function that renders
//! them as text at scrape time; it may refresh gauges inside it. The server stops when the returned
//! [`MetricsServer`] is dropped.

use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use std::net::SocketAddr;
use std::sync::Arc;

/// The content type of the OpenMetrics text format that `prometheus_client` encodes (the same the node uses).
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Why the metrics server could not start.
#[derive(Debug, thiserror::Error)]
pub enum MetricsHttpError {
    /// The listen address could not be bound (in use, or not an address of this machine).
    #[error("cannot listen for /metrics on {addr}: {source}")]
    Bind {
        /// The configured address.
        addr: SocketAddr,
        /// What the OS said.
        source: std::io::Error,
    },
}

/// A running `/metrics` server; dropping it stops the server.
pub struct MetricsServer {
    addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl MetricsServer {
    /// The address it listens on (with the real port when port 0 was asked for).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Encodes `registry` in the text format; an encoding error (which only a broken custom metric could cause)
/// becomes a comment line rather than a failed scrape.
pub fn encode(registry: &prometheus_client::registry::Registry) -> String {
    let mut out = String::new();
    if let Err(e) = prometheus_client::encoding::text::encode(&mut out, registry) {
        out = format!("# encoding metrics failed: {e}\n");
    }
    out
}

/// Binds `listen` and serves `GET /metrics` with whatever `render` returns, until the handle is dropped.
/// Must be called inside a tokio runtime.
pub async fn serve(
    listen: SocketAddr,
    render: impl Fn() -> String + Send + Sync + 'static,
) -> Result<MetricsServer, MetricsHttpError> {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|source| MetricsHttpError::Bind { addr: listen, source })?;
    let addr = listener.local_addr().map_err(|source| MetricsHttpError::Bind { addr: listen, source })?;
    let render: Arc<dyn Fn() -> String + Send + Sync> = Arc::new(render);
    let app = Router::new().route(
        "/metrics",
        get(move || {
            let render = render.clone();
            async move { ([(header::CONTENT_TYPE, CONTENT_TYPE)], render()).into_response() }
        }),
    );
    let task = tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::warn!(%addr, "metrics server stopped: {e}");
        }
    });
    tracing::info!(%addr, "serving /metrics");
    Ok(MetricsServer { addr, task })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn serves_what_render_returns_until_dropped() {
        let server = serve("127.0.0.1:0".parse().unwrap(), || "# EOF\n".to_string()).await.expect("bind");
        let url = format!("http://{}/metrics", server.addr());
        let response = reqwest::get(&url).await.expect("scrape");
        assert_eq!(response.headers()[reqwest::header::CONTENT_TYPE], CONTENT_TYPE);
        assert_eq!(response.text().await.unwrap(), "# EOF\n");
        let not_found = reqwest::get(format!("http://{}/other", server.addr())).await.expect("request");
        assert_eq!(not_found.status(), reqwest::StatusCode::NOT_FOUND);
        drop(server);
    }
}
