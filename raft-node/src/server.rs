//! Starting a node: Raft, the HTTP server (API + Raft RPC on one port), and the leader loops.

use crate::node::Node;
use std::future::Future;
use std::sync::Arc;

/// Runs a node from its config until `shutdown` resolves, then stops Raft cleanly.
#[cfg(feature = "rocksdb")]
pub async fn run(
    config: crate::config::NodeConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let listen = config.listen;
    let node = Node::start(config).await?;
    serve(node, listen, shutdown).await
}

/// Serves a started node's API and node-to-node endpoints on `listen` and runs its leader loops until
/// `shutdown` resolves, then stops Raft cleanly.
pub async fn serve(
    node: Arc<Node>,
    listen: std::net::SocketAddr,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let blobs = match &node.config.stores {
        Some(stores) => Some(Arc::new(
            crate::replication::Blobs::open(stores).map_err(|e| anyhow::anyhow!("cannot open the blob stores: {e}"))?,
        )),
        None => None,
    };
    let app = crate::api::router(node.clone(), blobs.clone())
        .merge(crate::console::router(node.clone(), blobs.clone()))
        .merge(crate::internal::router(node.clone()));
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {listen}: {e} (is another node using this port?)"))?;
    tracing::info!(node = node.id, %listen, "node listening");
    let monitor = tokio::spawn(crate::monitor::run(node.clone()));
    let rollouts = tokio::spawn(crate::rollout_controller::run(node.clone()));
    let replicator = blobs.map(|blobs| tokio::spawn(crate::replication::run(node.clone(), blobs)));
    axum::serve(listener, app).with_graceful_shutdown(shutdown).await?;
    monitor.abort();
    rollouts.abort();
    if let Some(replicator) = replicator {
        replicator.abort();
    }
    let _ = node.raft.shutdown().await;
    tracing::info!(node = node.id, "node stopped");
    Ok(())
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(s) => s,
            Err(_) => {
                let _ = ctrl_c.await;
                return;
            }
        };
        tokio::select! {
            _ = ctrl_c => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}
