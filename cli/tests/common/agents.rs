//! Test fixtures for deploys: certificates, region manager and host agent processes.

use cascade_client::blobs::StoreConfig;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// Runs `cascade` with `args`, panicking on failure.
pub fn cascade(args: &[&str]) {
    let output = Command::new(env!("CARGO_BIN_EXE_cascade")).args(args).output().expect("run cascade");
    assert!(output.status.success(), "cascade {args:?}: {}", String::from_utf8_lossy(&output.stderr));
}

/// A free UDP port on loopback.
pub fn free_udp_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Creates the CA (once) and a certificate for `name`; returns the `[tls]` TOML section.
pub fn certs_for(dir: &Path, name: &str) -> String {
    let ca = dir.join("ca");
    if !ca.join("ca.pem").exists() {
        cascade(&["certs", "ca", "--dir", ca.to_str().unwrap()]);
    }
    let out = dir.join("certs");
    cascade(&["certs", "issue", "--ca", ca.to_str().unwrap(), "--name", name, "--out", out.to_str().unwrap()]);
    format!(
        "[tls]\nca = {:?}\ncert = {:?}\nkey = {:?}\n",
        ca.join("ca.pem").display().to_string(),
        out.join(format!("{name}.pem")).display().to_string(),
        out.join(format!("{name}.key")).display().to_string(),
    )
}

/// The `metrics_listen` line of an agent config, or nothing.
fn metrics_line(metrics_listen: Option<SocketAddr>) -> String {
    metrics_listen.map(|addr| format!("metrics_listen = \"{addr}\"\n")).unwrap_or_default()
}

fn store_section(store: &StoreConfig) -> String {
    #[derive(serde::Serialize)]
    struct Section<'a> {
        store: &'a StoreConfig,
    }
    toml::to_string(&Section { store }).unwrap()
}

/// An agent process (manager or host), killed when dropped.
pub struct AgentProcess {
    pub name: String,
    pub config: PathBuf,
    pub log: PathBuf,
    pub data_dir: PathBuf,
    pub addr: SocketAddr,
    role: &'static str,
    child: Option<Child>,
}

impl AgentProcess {
    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&self.log).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_cascade"))
            .args(["agent", self.role, "--config"])
            .arg(&self.config)
            .env("CASCADE_LOG", "info,quinn=warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start agent");
        self.child = Some(child);
    }

    /// Starts a region manager.
    pub fn manager(dir: &Path, region: &str, servers: &[String], token: &str, store: &StoreConfig) -> Self {
        Self::manager_with_metrics(dir, region, servers, token, store, None)
    }

    /// [`Self::manager`] serving `/metrics` on `metrics_listen` when given.
    pub fn manager_with_metrics(
        dir: &Path,
        region: &str,
        servers: &[String],
        token: &str,
        store: &StoreConfig,
        metrics_listen: Option<SocketAddr>,
    ) -> Self {
        Self::spawn_manager(
            dir,
            region,
            &format!("manager-{region}"),
            servers,
            token,
            store,
            &metrics_line(metrics_listen),
        )
    }

    /// Starts one of several managers of a region's cluster `c1`: named `name` in the manager lease, with
    /// a lease of `lease_ttl_ms`.
    pub fn manager_ha(
        dir: &Path,
        region: &str,
        name: &str,
        servers: &[String],
        token: &str,
        store: &StoreConfig,
        lease_ttl_ms: u64,
    ) -> Self {
        Self::manager_of(dir, region, "c1", name, servers, token, store, lease_ttl_ms)
    }

    /// Starts a manager of cluster `cluster` of `region`, named `name` in its lease of `lease_ttl_ms`.
    #[allow(clippy::too_many_arguments)]
    pub fn manager_of(
        dir: &Path,
        region: &str,
        cluster: &str,
        name: &str,
        servers: &[String],
        token: &str,
        store: &StoreConfig,
        lease_ttl_ms: u64,
    ) -> Self {
        let extra = format!("cluster = \"{cluster}\"\nname = \"{name}\"\nlease_ttl_ms = {lease_ttl_ms}");
        Self::spawn_manager(dir, region, name, servers, token, store, &extra)
    }

    /// Writes a manager config for `region` (cluster `c1` unless `extra` names one; `extra` adds top-level
    /// keys) and starts it.
    fn spawn_manager(
        dir: &Path,
        region: &str,
        name: &str,
        servers: &[String],
        token: &str,
        store: &StoreConfig,
        extra: &str,
    ) -> Self {
        let addr: SocketAddr = format!("127.0.0.1:{}", free_udp_port()).parse().unwrap();
        let data_dir = dir.join(name);
        std::fs::create_dir_all(&data_dir).unwrap();
        let cluster = if extra.contains("cluster = ") { "" } else { "cluster = \"c1\"\n" };
        let config = format!(
            "region = \"{region}\"\n{cluster}servers = {servers:?}\ntoken = \"{token}\"\nlisten = \"{addr}\"\nreport_interval_ms = 500\nstatus_file = {:?}\n{extra}\n{}\n{}",
            data_dir.join("status.json").display().to_string(),
            store_section(store),
            certs_for(dir, name),
        );
        Self::launch(dir, name, &config, addr, data_dir, "manager")
    }

    /// The manager's status file.
    pub fn manager_status(&self) -> Option<serde_json::Value> {
        let bytes = std::fs::read(self.data_dir.join("status.json")).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    /// Starts a host agent that registers with whichever of `managers` accepts it.
    pub fn host_with_managers(dir: &Path, name: &str, managers: &[SocketAddr]) -> Self {
        let managers: Vec<String> = managers.iter().map(ToString::to_string).collect();
        Self::spawn_host(dir, name, &format!("managers = {managers:?}"), "")
    }

    /// Starts a host agent that registers with `manager`.
    pub fn host(dir: &Path, name: &str, manager: SocketAddr, corrupt_uploads: bool) -> Self {
        Self::host_with_metrics(dir, name, manager, corrupt_uploads, None)
    }

    /// [`Self::host`] serving `/metrics` on `metrics_listen` when given.
    pub fn host_with_metrics(
        dir: &Path,
        name: &str,
        manager: SocketAddr,
        corrupt_uploads: bool,
        metrics_listen: Option<SocketAddr>,
    ) -> Self {
        let extra = format!("corrupt_uploads = {corrupt_uploads}\n{}", metrics_line(metrics_listen));
        Self::spawn_host(dir, name, &format!("manager = \"{manager}\""), &extra)
    }

    /// Starts a host agent that registers with `manager` and declares `declaration`: its `services = [...]`
    /// and any `[labels]` / `[env]` tables, as TOML lines.
    pub fn host_running(dir: &Path, name: &str, manager: SocketAddr, declaration: &str) -> Self {
        Self::spawn_host_declaring(dir, name, &format!("manager = \"{manager}\""), "", declaration)
    }

    /// [`Self::host_running`] registering with whichever of `managers` accepts it.
    pub fn host_running_with_managers(dir: &Path, name: &str, managers: &[SocketAddr], declaration: &str) -> Self {
        let managers: Vec<String> = managers.iter().map(ToString::to_string).collect();
        Self::spawn_host_declaring(dir, name, &format!("managers = {managers:?}"), "", declaration)
    }

    /// Writes a host config (`managers_line` names its manager or managers, `extra` adds top-level keys) and
    /// starts the host. It runs the services the other tests deploy (`app`, `api`, `hello`).
    fn spawn_host(dir: &Path, name: &str, managers_line: &str, extra: &str) -> Self {
        Self::spawn_host_declaring(dir, name, managers_line, extra, "services = [\"app\", \"api\", \"hello\"]")
    }

    fn spawn_host_declaring(dir: &Path, name: &str, managers_line: &str, extra: &str, declaration: &str) -> Self {
        let addr: SocketAddr = format!("127.0.0.1:{}", free_udp_port()).parse().unwrap();
        let data_dir = dir.join(name);
        // Top-level keys first: the declaration may open tables (`[labels]`), and TLS is a table too.
        let config = format!(
            "name = \"{name}\"\nlisten = \"{addr}\"\n{managers_line}\ndata_dir = {:?}\nfetch_timeout_secs = 20\n{extra}\n{declaration}\n{}",
            data_dir.display().to_string(),
            certs_for(dir, name),
        );
        Self::launch(dir, name, &config, addr, data_dir, "host")
    }

    /// Writes `config` to `NAME.toml` in `dir` and starts the agent with its log in `NAME.log`.
    fn launch(dir: &Path, name: &str, config: &str, addr: SocketAddr, data_dir: PathBuf, role: &'static str) -> Self {
        let path = dir.join(format!("{name}.toml"));
        std::fs::write(&path, config).unwrap();
        let mut agent = Self {
            name: name.into(),
            config: path,
            log: dir.join(format!("{name}.log")),
            data_dir,
            addr,
            role,
            child: None,
        };
        agent.spawn();
        agent
    }

    /// SIGKILL.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again with the same config and data.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    /// The host's `status.json`.
    pub fn host_status(&self) -> Option<serde_json::Value> {
        let bytes = std::fs::read(self.data_dir.join("status.json")).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    /// The installed artifact the host's `current` link of `service` points at (the release's one file
    /// besides `manifest.json` and the recorded `deploy-*.json` specs).
    pub fn current_file(&self, service: &str) -> Option<PathBuf> {
        let release = self.data_dir.join("services").join(service).join("current");
        let mut files: Vec<PathBuf> = std::fs::read_dir(release)
            .ok()?
            .flatten()
            .map(|e| e.path())
            .filter(|p| {
                let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
                p.is_file() && name != "manifest.json" && !name.starts_with("deploy-") && !name.starts_with('.')
            })
            .collect();
        files.sort();
        files.into_iter().next()
    }

    /// BLAKE3 of the file the host's `current` link of `service` points at.
    pub fn current_digest(&self, service: &str) -> Option<cascade_core::Digest> {
        let file = std::fs::File::open(self.current_file(service)?).ok()?;
        let mut hasher = blake3::Hasher::new();
        hasher.update_reader(file).ok()?;
        Some(cascade_core::manifest::digest_of(hasher.finalize()))
    }
}

impl Drop for AgentProcess {
    fn drop(&mut self) {
        self.kill();
    }
}
