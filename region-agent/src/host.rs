//! The host agent: registers with its manager, saying which services it runs and its labels, fetches the
//! chunks the manager assigns from the peers it names, verifies each before keeping or serving it, and
//! activates a release when told to: install, `activate`, health probe, or back to the previous release
//! ([`activation`]).
//!
//! [`run`] is production's (QUIC, blocking work on tokio's pool); [`run_with`] takes the network and the
//! blocking hook as a [`HostRuntime`], which is how the simulation runs this same code.

mod activation;
mod chunks;

pub use activation::{ServiceState, ServiceStatus};

use crate::blocking::Blocking;
use crate::metrics::HostMetrics;
use crate::protocol::{read_frame, write_frame, DownloadId, FetchFailure, HostMessage, ManagerMessage, StreamOpen};
use crate::releases::Releases;
use crate::tls::TlsFiles;
use crate::transport::{QuicTransport, Transport};
use cascade_core::{Digest, HostDeclaration, ServiceName};
use serde::Deserialize;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, watch};

/// `cascade agent host --config FILE`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostConfig {
    /// Unique name of this machine in its cluster.
    pub name: String,
    /// UDP address to listen on for chunk requests.
    pub listen: SocketAddr,
    /// Address peers use to reach it; `listen` by default.
    #[serde(default)]
    pub advertise: Option<SocketAddr>,
    /// The manager's QUIC address (one manager); see `managers`.
    #[serde(default)]
    pub manager: Option<SocketAddr>,
    /// The QUIC addresses of the cluster's managers (active and standby): the host registers with whichever
    /// accepts and tries the others when its session ends.
    #[serde(default)]
    pub managers: Vec<SocketAddr>,
    /// Releases, downloads and `current` links.
    pub data_dir: PathBuf,
    /// Releases kept for rollbacks and chunk reuse.
    #[serde(default = "default_keep")]
    pub keep_releases: usize,
    /// The services this host runs. A deploy of any other service never reaches it: it is not sent the
    /// release, downloads no byte of it and does not count in its totals. Required (may be empty).
    pub services: BTreeSet<ServiceName>,
    /// Free-form labels a service's placement selects on, e.g. `{ rack = "r12", pool = "frontend" }`; each is
    /// also in the services' environment as `CASCADE_LABEL_<KEY>`.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Extra environment of every service's `activate`, `stop` and health probe on this host (and the
    /// variables a health URL may name), e.g. `{ PORT = "9101" }`.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// A fetch that has not completed in this time is abandoned as stalled, seconds.
    #[serde(default = "default_fetch_timeout")]
    pub fetch_timeout_secs: u64,
    /// Certificates.
    pub tls: TlsFiles,
    /// Fault injection for tests of the swarm's defences: flip a byte of every chunk served. Never set it
    /// in production.
    #[serde(default)]
    pub corrupt_uploads: bool,
    /// Where to serve Prometheus `/metrics` (e.g. `127.0.0.1:9103`); none by default.
    #[serde(default)]
    pub metrics_listen: Option<SocketAddr>,
}

fn default_keep() -> usize {
    3
}
fn default_fetch_timeout() -> u64 {
    60
}

impl HostConfig {
    /// Reads a config file.
    pub fn load(path: &std::path::Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
        let config: Self =
            toml::from_str(&text).map_err(|e| anyhow::anyhow!("host config {} is invalid: {e}", path.display()))?;
        config.manager_addrs().map_err(|e| anyhow::anyhow!("host config {} is invalid: {e}", path.display()))?;
        config
            .declaration()
            .validate()
            .map_err(|e| anyhow::anyhow!("host config {} is invalid: {e}", path.display()))?;
        if let Some(bad) =
            config.env.keys().find(|k| k.is_empty() || !k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'))
        {
            anyhow::bail!(
                "host config {} is invalid: env name {bad:?} must be letters, digits and `_`",
                path.display()
            );
        }
        Ok(config)
    }

    /// What this host tells its manager it runs.
    pub fn declaration(&self) -> HostDeclaration {
        HostDeclaration { services: self.services.clone(), labels: self.labels.clone() }
    }

    /// Every manager to try, in order: `managers`, then `manager` when it is not among them.
    pub fn manager_addrs(&self) -> anyhow::Result<Vec<SocketAddr>> {
        let mut addrs = self.managers.clone();
        if let Some(one) = self.manager.filter(|m| !addrs.contains(m)) {
            addrs.push(one);
        }
        anyhow::ensure!(!addrs.is_empty(), "set `manager = \"addr\"` or `managers = [\"addr\", ...]`");
        Ok(addrs)
    }
}

/// The host's own check that it runs `service`, behind the manager's targeting. The simulation's planted
/// targeting bug turns off both, or the host would hide the manager's.
fn runs(config: &HostConfig, service: &ServiceName) -> bool {
    config.services.contains(service) || crate::manager::fault_injection::ignores_targeting()
}

/// How long a host waits for a manager's QUIC handshake before trying the next one.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// Counters a test or an operator reads from `status.json` in the data dir.
#[derive(Debug, Default, Clone, serde::Serialize, serde::Deserialize)]
pub struct HostStatus {
    /// Chunks fetched from the network, per artifact digest.
    pub fetched: HashMap<String, u32>,
    /// Chunks found locally (resumed or reused), per artifact digest.
    pub local: HashMap<String, u32>,
    /// Bad chunks received, per sender address.
    pub bad_chunks_from: HashMap<String, u32>,
    /// Active digest per service.
    pub active: HashMap<String, String>,
    /// Per service, its latest activation: generation, release, state and failure reason.
    #[serde(default)]
    pub services: BTreeMap<String, ServiceStatus>,
}

/// Told of every activation (service, digest) once `current` points at the new release.
pub type ActivationHook = Arc<dyn Fn(&ServiceName, &Digest) + Send + Sync>;

/// What a host agent runs on besides its config: the network, where blocking work runs, and who hears of
/// activations (the simulation checks every activated release's bytes).
pub struct HostRuntime<T: Transport> {
    /// The network.
    pub transport: Arc<T>,
    /// Where hashing and file writes run.
    pub blocking: Blocking,
    /// Called after each successful activation.
    pub on_activated: Option<ActivationHook>,
}

struct Host<T: Transport> {
    config: HostConfig,
    releases: Mutex<Releases>,
    transport: Arc<T>,
    blocking: Blocking,
    on_activated: Option<ActivationHook>,
    status: Mutex<HostStatus>,
    metrics: HostMetrics,
}

impl<T: Transport> Host<T> {
    fn save_status(&self) {
        // The lock is held through the rename: two fetch tasks writing the one staged file at once could
        // interleave their bytes, and a reader would then see a torn `status.json`.
        let status = self.status.lock().expect("status lock");
        let path = self.config.data_dir.join("status.json");
        let staged = self.config.data_dir.join(".status.json");
        if let Ok(json) = serde_json::to_vec_pretty(&*status) {
            if std::fs::write(&staged, json).is_ok() {
                let _ = std::fs::rename(staged, path);
            }
        }
    }
}

/// Runs the host agent over QUIC until `shutdown` becomes true.
pub async fn run(config: HostConfig, shutdown: watch::Receiver<bool>) -> anyhow::Result<()> {
    let endpoint = crate::tls::endpoint(&config.tls, config.listen)?;
    let runtime = HostRuntime {
        transport: Arc::new(QuicTransport::new(endpoint)),
        blocking: Blocking::ThreadPool,
        on_activated: None,
    };
    run_with(config, runtime, shutdown).await
}

/// Runs the host agent on `runtime`'s network until `shutdown` becomes true.
pub async fn run_with<T: Transport>(
    config: HostConfig,
    runtime: HostRuntime<T>,
    mut shutdown: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let mut releases = Releases::open(&config.data_dir, config.keep_releases)?;
    releases.load_kept()?;
    let host = Arc::new(Host {
        config,
        releases: Mutex::new(releases),
        transport: runtime.transport,
        blocking: runtime.blocking,
        on_activated: runtime.on_activated,
        status: Mutex::new(HostStatus::default()),
        metrics: HostMetrics::new(),
    });
    host.save_status();
    // Held until the agent stops: dropping it stops the server.
    let _metrics_server = match host.config.metrics_listen {
        Some(listen) => {
            let metrics_host = host.clone();
            Some(cascade_client::metrics_http::serve(listen, move || metrics_host.metrics.render()).await?)
        }
        None => None,
    };
    tokio::spawn(chunks::serve_chunks(host.clone()));
    let managers = host.config.manager_addrs()?;
    let mut backoff = Duration::from_millis(100);
    // Tries each manager in turn: the standby refuses, a dead one times out, the active one keeps the session.
    for attempt in 0usize.. {
        let manager = managers[attempt % managers.len()];
        let registered = Arc::new(std::sync::atomic::AtomicBool::new(false));
        tokio::select! {
            result = control_session(host.clone(), manager, registered.clone()) => {
                if let Err(e) = result {
                    tracing::warn!(host = %host.config.name, %manager, "manager session ended: {e:#}");
                }
            }
            _ = shutdown.changed() => break,
        }
        if registered.load(std::sync::atomic::Ordering::Relaxed) {
            backoff = Duration::from_millis(100);
        }
        // Back off only after every manager was tried once more.
        if (attempt + 1) % managers.len() == 0 {
            tokio::select! {
                () = tokio::time::sleep(backoff) => {}
                _ = shutdown.changed() => break,
            }
            backoff = (backoff * 2).min(Duration::from_secs(2));
        }
    }
    host.transport.close(b"host shutting down");
    Ok(())
}

/// One session with a manager: register, then follow its instructions until the stream ends or the manager
/// refuses (it stands by); `registered` turns true once the manager welcomed the host.
async fn control_session<T: Transport>(
    host: Arc<Host<T>>,
    manager: SocketAddr,
    registered: Arc<std::sync::atomic::AtomicBool>,
) -> anyhow::Result<()> {
    let (mut send, mut recv) = host.transport.open_session(manager, CONNECT_TIMEOUT).await?;
    let data_addr = host.config.advertise.unwrap_or(host.config.listen);
    let open =
        StreamOpen::Control { name: host.config.name.clone(), data_addr, declaration: host.config.declaration() };
    write_frame(&mut send, &open).await?;
    let (tx, mut rx) = mpsc::unbounded_channel::<HostMessage>();
    // The manager's numbers for the artifacts it asked this session to receive.
    let mut downloads: HashMap<DownloadId, Digest> = HashMap::new();
    let writer = tokio::spawn(async move {
        while let Some(message) = rx.recv().await {
            if write_frame(&mut send, &message).await.is_err() {
                break;
            }
        }
    });
    let result = async {
        while let Some(message) = read_frame::<ManagerMessage>(&mut recv).await? {
            match message {
                ManagerMessage::Welcome { host_id } => {
                    registered.store(true, std::sync::atomic::Ordering::Relaxed);
                    tracing::info!(host = %host.config.name, host_id, %manager, "registered");
                }
                ManagerMessage::Refused { reason } => anyhow::bail!("refused: {reason}"),
                ManagerMessage::Prepare { service, generation, download, manifest } => {
                    if !runs(&host.config, &service) {
                        // The manager's targeting is the first line; the host's own list is the last.
                        tracing::warn!(%service, "refusing a download of a service this host does not run");
                        let reason =
                            format!("{} does not run {service} (see `services` in its config)", host.config.name);
                        let _ = tx.send(HostMessage::DownloadFailed { download, reason });
                        continue;
                    }
                    downloads.insert(download, manifest.digest.clone());
                    let host = host.clone();
                    let tx = tx.clone();
                    let blocking = host.blocking;
                    tokio::spawn(blocking.run(move || {
                        let digest = manifest.digest.clone();
                        let prepared = host.releases.lock().expect("releases lock").prepare(&manifest);
                        match prepared {
                            Ok((held, reused)) => {
                                tracing::info!(%service, generation, %digest, held = held.len(), reused, "prepared");
                                host.status
                                    .lock()
                                    .expect("status lock")
                                    .local
                                    .insert(digest.to_string(), held.len() as u32);
                                host.save_status();
                                let _ = tx.send(HostMessage::Have { download, chunks: held });
                            }
                            Err(e) => {
                                tracing::error!(%digest, "cannot prepare the download: {e}");
                                let reason = format!("cannot prepare the download of {digest}: {e}");
                                let _ = tx.send(HostMessage::DownloadFailed { download, reason });
                            }
                        }
                    }));
                }
                ManagerMessage::Fetch { download, chunk, from, addr } => match downloads.get(&download) {
                    Some(digest) => {
                        let fetch = chunks::Fetch { download, digest: digest.clone(), chunk, from, addr };
                        tokio::spawn(chunks::fetch(host.clone(), tx.clone(), fetch));
                    }
                    None => {
                        // Never drop an assignment silently: the manager holds a sender's slot for it.
                        tracing::warn!(download, chunk, "fetch for a download this session was not asked to prepare");
                        let _ = tx.send(HostMessage::Failed { download, chunk, from, reason: FetchFailure::Stalled });
                    }
                },
                ManagerMessage::Activate { service, generation, digest, spec } => {
                    if !runs(&host.config, &service) {
                        // The manager's targeting is the first line; the host's own list is the last.
                        tracing::warn!(%service, "refusing to activate a service this host does not run");
                        let reason =
                            format!("{} does not run {service} (see `services` in its config)", host.config.name);
                        let _ = tx.send(HostMessage::ActivationFailed { service, generation, reason });
                        continue;
                    }
                    tokio::spawn(activation::activate(host.clone(), tx.clone(), service, generation, digest, *spec));
                }
            }
        }
        anyhow::Ok(())
    }
    .await;
    writer.abort();
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(managers: &str) -> anyhow::Result<HostConfig> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("host.toml");
        let text = format!(
            "name = \"h1\"\nlisten = \"127.0.0.1:7001\"\n{managers}\ndata_dir = \"/tmp/h1\"\nservices = [\"api\"]\n[tls]\nca = \"ca.pem\"\ncert = \"h1.pem\"\nkey = \"h1.key\"\n"
        );
        std::fs::write(&path, text)?;
        HostConfig::load(&path)
    }

    #[test]
    fn one_manager_or_several_and_at_least_one() {
        let addr = |s: &str| s.parse::<SocketAddr>().unwrap();
        let one = config("manager = \"127.0.0.1:7000\"").unwrap();
        assert_eq!(one.manager_addrs().unwrap(), [addr("127.0.0.1:7000")]);
        let two = config("managers = [\"127.0.0.1:7000\", \"127.0.0.1:7100\"]").unwrap();
        assert_eq!(two.manager_addrs().unwrap(), [addr("127.0.0.1:7000"), addr("127.0.0.1:7100")]);
        let both = config("manager = \"127.0.0.1:7100\"\nmanagers = [\"127.0.0.1:7000\", \"127.0.0.1:7100\"]").unwrap();
        assert_eq!(both.manager_addrs().unwrap().len(), 2, "a manager listed twice is tried once");
        let none = config("").unwrap_err();
        assert!(none.to_string().contains("managers"), "{none}");
    }

    #[test]
    fn services_and_labels_are_checked_when_the_config_loads() {
        let write = |body: &str| {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("host.toml");
            let text = format!(
                "name = \"h1\"\nlisten = \"127.0.0.1:7001\"\nmanager = \"127.0.0.1:7000\"\ndata_dir = \"/tmp/h1\"\n{body}\n[tls]\nca = \"a\"\ncert = \"b\"\nkey = \"c\"\n"
            );
            std::fs::write(&path, text).unwrap();
            HostConfig::load(&path).map_err(|e| e.to_string())
        };
        let ok = write("services = [\"web\"]\nlabels = { pool = \"front\" }\nenv = { PORT = \"9101\" }").unwrap();
        assert!(ok.declaration().runs(&ServiceName::parse("web").unwrap(), &cascade_core::DeploySpec::default()));
        let missing = write("").unwrap_err();
        assert!(missing.contains("services"), "{missing}");
        let bad_service = write("services = [\"Not A Service!\"]").unwrap_err();
        assert!(bad_service.contains("line") && bad_service.contains("service"), "{bad_service}");
        let bad_label = write("services = []\nlabels = { Pool = \"x\" }").unwrap_err();
        assert!(bad_label.contains("label \"Pool\""), "{bad_label}");
        let bad_env = write("services = []\nenv = { \"A-B\" = \"x\" }").unwrap_err();
        assert!(bad_env.contains("env name"), "{bad_env}");
    }
}
