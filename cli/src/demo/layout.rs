//! Where every part of the demo installation lives (data dir, ports, tokens, certificates) and the config
//! file each process is started with. The configs are the same TOML an operator writes; each one is read
//! back through its real loader before any process starts, so a demo config can never drift from what the
//! binaries accept.

use anyhow::Context;
use cascade_client::blobs::{StoreConfig, StoresConfig};
use cascade_core::api::Role;
use cascade_raft_node::config::{MemberRole, MonitorConfig, NodeConfig, PeerConfig, ReplicationConfig, TokenConfig};
use rand::distributions::{Alphanumeric, DistString};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// The regions of the demo: each gets a learner, a blob store, a manager and its hosts.
pub const REGIONS: [&str; 3] = ["us-east", "eu-west", "ap-south"];
/// Voters, all in the home region.
pub const VOTERS: u64 = 3;
/// Build workers.
pub const WORKERS: usize = 2;
/// One of the demo's example services: what it is called, the example repository it is built from, and
/// the `pool` label of the hosts that run it.
#[derive(Debug)]
pub struct ServiceSlot {
    /// The service name builds are submitted and deployed under.
    pub name: &'static str,
    /// Directory of its example git repository under the data dir.
    pub repo: &'static str,
    /// The `pool` label of its hosts (the build's `placement` selects it).
    pub pool: &'static str,
    /// The first word of its `GET /` answer.
    pub greeting: &'static str,
}

/// The example services: `hello` on the first hosts of each region (3 of 5), `greeter` on the others, so a
/// deploy of one never reaches the hosts of the other.
pub const SERVICES: [ServiceSlot; 2] = [
    ServiceSlot { name: "hello", repo: "example", pool: "web", greeting: "hello" },
    ServiceSlot { name: "greeter", repo: "example-greeter", pool: "api", greeting: "greetings" },
];
/// Fewest hosts per region: one for each example service.
pub const MIN_HOSTS_PER_REGION: usize = SERVICES.len();

/// One bearer token per role, generated on the first run and kept in `tokens.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Tokens {
    /// Everything, including membership.
    pub admin: String,
    /// Submits and cancels builds.
    pub builder: String,
    /// Deploys, rolls back, pauses.
    pub deployer: String,
    /// Workers and agents.
    pub worker: String,
    /// Reads only.
    pub viewer: String,
}

impl Tokens {
    fn generate() -> Self {
        let mut rng = rand::thread_rng();
        let mut token = |role: &str| format!("demo-{role}-{}", Alphanumeric.sample_string(&mut rng, 24));
        Self {
            admin: token("admin"),
            builder: token("builder"),
            deployer: token("deployer"),
            worker: token("worker"),
            viewer: token("viewer"),
        }
    }

    /// Reads `tokens.json`, or writes a fresh set.
    pub fn load_or_create(path: &Path) -> anyhow::Result<Self> {
        if let Ok(bytes) = std::fs::read(path) {
            return serde_json::from_slice(&bytes)
                .with_context(|| format!("{} is corrupt; run `cascade demo --fresh` to start over", path.display()));
        }
        let tokens = Self::generate();
        std::fs::write(path, serde_json::to_vec_pretty(&tokens)?)
            .with_context(|| format!("cannot write {}", path.display()))?;
        Ok(tokens)
    }
}

/// A node of the demo cluster.
#[derive(Debug, Clone)]
pub struct NodeSlot {
    /// Raft id.
    pub id: u64,
    /// `home` for voters, the region for learners.
    pub region: String,
    /// Voter or learner.
    pub voter: bool,
    /// HTTP address (API, console, Raft).
    pub addr: SocketAddr,
}

/// The whole installation's shape, computed from the data dir, the base port and the host count.
#[derive(Debug, Clone)]
pub struct Layout {
    /// Root of everything the demo writes.
    pub data_dir: PathBuf,
    /// Voters first, then one learner per region.
    pub nodes: Vec<NodeSlot>,
    /// Hosts in each region.
    pub hosts_per_region: usize,
    base_port: u16,
}

/// A process to start: its name, its `cascade` arguments and where its config is.
#[derive(Debug, Clone)]
pub struct ProcessSpec {
    /// e.g. `node1`, `worker-2`, `manager-us-east`, `us-east-host3`.
    pub name: String,
    /// Arguments after `cascade`.
    pub args: Vec<String>,
}

impl Layout {
    /// The layout for a data dir, base port and host count.
    pub fn new(data_dir: PathBuf, base_port: u16, hosts_per_region: usize) -> Self {
        let addr = |offset: u16| SocketAddr::from(([127, 0, 0, 1], base_port + offset));
        let mut nodes: Vec<NodeSlot> = (1..=VOTERS)
            .map(|id| NodeSlot { id, region: "home".into(), voter: true, addr: addr(id as u16 - 1) })
            .collect();
        for (i, region) in REGIONS.iter().enumerate() {
            let id = VOTERS + 1 + i as u64;
            nodes.push(NodeSlot { id, region: (*region).into(), voter: false, addr: addr(id as u16 - 1) });
        }
        Self { data_dir, nodes, hosts_per_region, base_port }
    }

    /// Every port the demo binds, TCP (nodes, metrics, the services) then UDP (agents), so that a clash is
    /// found before anything starts.
    pub fn ports(&self) -> (Vec<u16>, Vec<u16>) {
        let mut tcp: Vec<u16> = self.nodes.iter().map(|n| n.addr.port()).collect();
        tcp.extend((0..WORKERS).map(|w| self.worker_metrics(w).port()));
        tcp.extend((0..REGIONS.len()).map(|r| self.manager_metrics(r).port()));
        for r in 0..REGIONS.len() {
            tcp.extend((0..self.hosts_per_region).map(|h| self.host_metrics(r, h).port()));
            tcp.extend((0..self.hosts_per_region).map(|h| self.service_port(r, h)));
        }
        let mut udp: Vec<u16> = (0..REGIONS.len()).map(|r| self.manager_addr(r).port()).collect();
        for r in 0..REGIONS.len() {
            udp.extend((0..self.hosts_per_region).map(|h| self.host_addr(r, h).port()));
        }
        (tcp, udp)
    }

    /// The highest port the layout uses (ports are `base .. base + 600 + regions × hosts`).
    pub fn last_port(&self) -> u32 {
        u32::from(self.base_port) + 600 + (REGIONS.len() * self.hosts_per_region) as u32
    }

    /// The example service host `host` (of any region) runs, as an index into [`SERVICES`]: the first
    /// three fifths of the hosts (at least one) run `hello`, the others (at least one) `greeter`.
    pub fn service_of_host(&self, host: usize) -> usize {
        let second = (self.hosts_per_region * 2 / 5).max(1);
        usize::from(host + second >= self.hosts_per_region)
    }

    /// The hosts (region, host) that run `SERVICES[service]`, region by region.
    pub fn hosts_of(&self, service: usize) -> Vec<(usize, usize)> {
        (0..REGIONS.len())
            .flat_map(|r| (0..self.hosts_per_region).map(move |h| (r, h)))
            .filter(|(_, h)| self.service_of_host(*h) == service)
            .collect()
    }

    /// The TCP port the service of host `host` of region `region` listens on (its `PORT`): one per host,
    /// every host runs one service.
    pub fn service_port(&self, region: usize, host: usize) -> u16 {
        self.base_port + 600 + (region * self.hosts_per_region + host) as u16
    }

    /// Where to reach the service of a host.
    pub fn service_url(&self, region: usize, host: usize) -> String {
        format!("http://127.0.0.1:{}/", self.service_port(region, host))
    }

    /// Voters' `host:port`.
    pub fn voter_addrs(&self) -> Vec<String> {
        self.nodes.iter().filter(|n| n.voter).map(|n| n.addr.to_string()).collect()
    }

    /// Every node's URL, voters first.
    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(|n| format!("http://{}", n.addr)).collect()
    }

    /// The console's address (node 1).
    pub fn console_url(&self) -> String {
        format!("http://{}/", self.nodes[0].addr)
    }

    /// Prometheus endpoints, one per kind of process: (kind, URL).
    pub fn metrics_urls(&self) -> Vec<(&'static str, String)> {
        vec![
            ("node", format!("http://{}/metrics", self.nodes[0].addr)),
            ("worker", format!("http://{}/metrics", self.worker_metrics(0))),
            ("manager", format!("http://{}/metrics", self.manager_metrics(0))),
            ("host", format!("http://{}/metrics", self.host_metrics(0, 0))),
        ]
    }

    fn worker_metrics(&self, worker: usize) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.base_port + 50 + worker as u16))
    }

    fn manager_metrics(&self, region: usize) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.base_port + 60 + region as u16))
    }

    fn host_metrics(&self, region: usize, host: usize) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.base_port + 400 + (region * self.hosts_per_region + host) as u16))
    }

    fn manager_addr(&self, region: usize) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.base_port + 100 + region as u16))
    }

    fn host_addr(&self, region: usize, host: usize) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.base_port + 200 + (region * self.hosts_per_region + host) as u16))
    }

    /// Name of host `host` of region `region`.
    pub fn host_name(region: usize, host: usize) -> String {
        format!("{}-host{host}", REGIONS[region])
    }

    /// A host's data dir (its releases and `status.json`).
    pub fn host_dir(&self, region: usize, host: usize) -> PathBuf {
        self.data_dir.join("hosts").join(Self::host_name(region, host))
    }

    /// Every host's data dir.
    pub fn all_host_dirs(&self) -> Vec<PathBuf> {
        (0..REGIONS.len()).flat_map(|r| (0..self.hosts_per_region).map(move |h| self.host_dir(r, h))).collect()
    }

    /// The example repository of `SERVICES[service]`.
    pub fn example_repo(&self, service: usize) -> PathBuf {
        self.data_dir.join(SERVICES[service].repo)
    }

    fn store(&self, name: &str) -> StoreConfig {
        StoreConfig::Local { path: self.data_dir.join("stores").join(name) }
    }

    fn config_path(&self, name: &str) -> PathBuf {
        self.data_dir.join("config").join(format!("{name}.toml"))
    }

    fn tls_section(&self, name: &str) -> toml::Table {
        let certs = self.data_dir.join("certs");
        let mut tls = toml::Table::new();
        tls.insert("ca".into(), path_value(&certs.join("ca").join("ca.pem")));
        tls.insert("cert".into(), path_value(&certs.join(format!("{name}.pem"))));
        tls.insert("key".into(), path_value(&certs.join(format!("{name}.key"))));
        tls
    }

    /// Creates the CA and every agent's certificate, unless they exist.
    pub fn ensure_certs(&self) -> anyhow::Result<()> {
        let certs = self.data_dir.join("certs");
        let ca = certs.join("ca");
        if !ca.join("ca.pem").exists() {
            cascade_region_agent::tls::create_ca(&ca)?;
        }
        let mut names: Vec<String> = REGIONS.iter().map(|r| format!("manager-{r}")).collect();
        for r in 0..REGIONS.len() {
            names.extend((0..self.hosts_per_region).map(|h| Self::host_name(r, h)));
        }
        for name in names {
            if !certs.join(format!("{name}.pem")).exists() {
                cascade_region_agent::tls::issue(&ca, &name, &certs)?;
            }
        }
        Ok(())
    }

    /// Writes every process's config, checks it with the real loader, and returns the processes to start
    /// in order: nodes, workers, managers, hosts.
    pub fn write_configs(&self, tokens: &Tokens) -> anyhow::Result<Vec<ProcessSpec>> {
        std::fs::create_dir_all(self.data_dir.join("config"))?;
        let mut specs = Vec::new();
        for node in &self.nodes {
            let name = format!("node{}", node.id);
            let path = self.config_path(&name);
            let config = self.node_config(node, tokens);
            config.validate().map_err(|e| anyhow::anyhow!("demo node config is invalid: {e}"))?;
            std::fs::write(&path, toml::to_string(&config)?)?;
            cascade_raft_node::NodeConfig::load(&path)?;
            specs.push(ProcessSpec { name, args: args(&["node", "--config"], &path) });
        }
        for w in 0..WORKERS {
            let name = format!("worker-{}", w + 1);
            let mut t = toml::Table::new();
            t.insert("id".into(), name.clone().into());
            t.insert("servers".into(), self.voter_addrs().into());
            t.insert("token".into(), tokens.worker.clone().into());
            t.insert("work_dir".into(), path_value(&self.data_dir.join(&name)));
            t.insert("metrics_listen".into(), self.worker_metrics(w).to_string().into());
            t.insert("store".into(), toml::Value::try_from(self.store("main"))?);
            let path = self.write_table(&name, &t)?;
            cascade_worker::WorkerConfig::load(&path)?;
            specs.push(ProcessSpec { name, args: args(&["worker", "--config"], &path) });
        }
        for (r, region) in REGIONS.iter().enumerate() {
            let name = format!("manager-{region}");
            let learner = &self.nodes[VOTERS as usize + r];
            let mut servers = vec![learner.addr.to_string()];
            servers.extend(self.voter_addrs());
            let mut t = toml::Table::new();
            t.insert("region".into(), (*region).into());
            t.insert("cluster".into(), "c1".into());
            t.insert("servers".into(), servers.into());
            t.insert("token".into(), tokens.worker.clone().into());
            t.insert("listen".into(), self.manager_addr(r).to_string().into());
            t.insert("report_interval_ms".into(), 1000.into());
            t.insert("metrics_listen".into(), self.manager_metrics(r).to_string().into());
            t.insert("status_file".into(), path_value(&self.data_dir.join(format!("{name}.status.json"))));
            t.insert("store".into(), toml::Value::try_from(self.store(region))?);
            t.insert("tls".into(), self.tls_section(&name).into());
            let path = self.write_table(&name, &t)?;
            cascade_region_agent::manager::ManagerConfig::load(&path)?;
            specs.push(ProcessSpec { name, args: args(&["agent", "manager", "--config"], &path) });
        }
        for (r, region) in REGIONS.iter().enumerate() {
            for h in 0..self.hosts_per_region {
                let name = Self::host_name(r, h);
                let mut t = toml::Table::new();
                t.insert("name".into(), name.clone().into());
                t.insert("listen".into(), self.host_addr(r, h).to_string().into());
                t.insert("manager".into(), self.manager_addr(r).to_string().into());
                t.insert("metrics_listen".into(), self.host_metrics(r, h).to_string().into());
                t.insert("data_dir".into(), path_value(&self.host_dir(r, h)));
                // What the host runs: a deploy of the other service never reaches it.
                let service = &SERVICES[self.service_of_host(h)];
                t.insert("services".into(), vec![service.name].into());
                let mut labels = toml::Table::new();
                labels.insert("pool".into(), service.pool.into());
                labels.insert("region".into(), (*region).into());
                t.insert("labels".into(), labels.into());
                let mut env = toml::Table::new();
                env.insert("PORT".into(), self.service_port(r, h).to_string().into());
                t.insert("env".into(), env.into());
                t.insert("tls".into(), self.tls_section(&name).into());
                let path = self.write_table(&name, &t)?;
                cascade_region_agent::host::HostConfig::load(&path)?;
                specs.push(ProcessSpec { name, args: args(&["agent", "host", "--config"], &path) });
            }
        }
        Ok(specs)
    }

    fn write_table(&self, name: &str, table: &toml::Table) -> anyhow::Result<PathBuf> {
        let path = self.config_path(name);
        std::fs::write(&path, toml::to_string(table)?).with_context(|| format!("cannot write {}", path.display()))?;
        Ok(path)
    }

    fn node_config(&self, node: &NodeSlot, tokens: &Tokens) -> NodeConfig {
        let token = |name: &str, token: &str, role: Role| TokenConfig { name: name.into(), token: token.into(), role };
        let mut regions = BTreeMap::new();
        for region in REGIONS {
            regions.insert(region.to_string(), self.store(region));
        }
        NodeConfig {
            id: node.id,
            listen: node.addr,
            advertise: None,
            data_dir: self.data_dir.join(format!("node{}", node.id)),
            region: node.region.clone(),
            role: if node.voter { MemberRole::Voter } else { MemberRole::Learner },
            peers: self
                .nodes
                .iter()
                .filter(|n| n.voter && n.id != node.id)
                .map(|n| PeerConfig { id: n.id, addr: n.addr.to_string(), region: n.region.clone() })
                .collect(),
            cluster_secret: format!("{}-cluster", tokens.admin),
            tokens: vec![
                token("admin", &tokens.admin, Role::Admin),
                token("builder", &tokens.builder, Role::Builder),
                token("deployer", &tokens.deployer, Role::Deployer),
                token("worker", &tokens.worker, Role::Worker),
                token("viewer", &tokens.viewer, Role::Viewer),
            ],
            raft: Default::default(),
            monitor: MonitorConfig { interval_secs: 2, stale_after_secs: 60 },
            stores: Some(StoresConfig { main: self.store("main"), regions }),
            replication: ReplicationConfig { poll_interval_ms: 300, ..Default::default() },
        }
    }
}

fn path_value(path: &Path) -> toml::Value {
    toml::Value::String(path.display().to_string())
}

fn args(prefix: &[&str], config: &Path) -> Vec<String> {
    let mut args: Vec<String> = prefix.iter().map(|s| s.to_string()).collect();
    args.push(config.display().to_string());
    args
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_config_loads_and_ports_are_distinct() {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::new(dir.path().to_path_buf(), 7001, 5);
        let tokens = Tokens::load_or_create(&dir.path().join("tokens.json")).unwrap();
        let specs = layout.write_configs(&tokens).unwrap();
        assert_eq!(specs.len(), 6 + WORKERS + 3 + 15);
        let (tcp, udp) = layout.ports();
        assert_eq!(tcp.len(), 6 + WORKERS + 3 + 2 * 15, "every host's metrics and service port");
        let mut all: Vec<u16> = tcp.iter().chain(udp.iter()).copied().collect();
        let before = all.len();
        all.sort_unstable();
        all.dedup();
        assert_eq!(all.len(), before, "ports overlap");
        assert!(u32::from(*all.last().unwrap()) <= layout.last_port());
        // Each host runs one service on its own port, named in its config's `env`.
        let host = cascade_region_agent::host::HostConfig::load(&dir.path().join("config/eu-west-host4.toml")).unwrap();
        assert_eq!(host.services.iter().map(|s| s.to_string()).collect::<Vec<_>>(), ["greeter"]);
        assert_eq!(host.labels.get("pool").map(String::as_str), Some("api"));
        assert_eq!(host.env.get("PORT"), Some(&layout.service_port(1, 4).to_string()));
        let again = Tokens::load_or_create(&dir.path().join("tokens.json")).unwrap();
        assert_eq!(again.admin, tokens.admin, "tokens are kept across runs");
    }

    #[test]
    fn every_service_runs_on_some_hosts_of_every_region_and_no_host_runs_two() {
        for hosts in [MIN_HOSTS_PER_REGION, 3, 4, 5, 10, 50] {
            let layout = Layout::new(PathBuf::from("/nonexistent"), 7001, hosts);
            let hello = layout.hosts_of(0);
            let greeter = layout.hosts_of(1);
            assert_eq!(hello.len() + greeter.len(), 3 * hosts, "{hosts} per region");
            for region in 0..REGIONS.len() {
                assert!(hello.iter().any(|(r, _)| *r == region), "{hosts} per region");
                assert!(greeter.iter().any(|(r, _)| *r == region), "{hosts} per region");
            }
            assert!(hello.len() >= greeter.len(), "{hosts} per region");
            let (tcp, udp) = layout.ports();
            let mut all: Vec<u16> = tcp.iter().chain(udp.iter()).copied().collect();
            let before = all.len();
            all.sort_unstable();
            all.dedup();
            assert_eq!(all.len(), before, "ports overlap with {hosts} hosts per region");
            assert!(u32::from(*all.last().unwrap()) <= layout.last_port());
        }
        let five = Layout::new(PathBuf::from("/nonexistent"), 7001, 5);
        assert_eq!(five.hosts_of(0).len(), 9, "hello on hosts 0-2");
        assert_eq!(five.hosts_of(1), [(0, 3), (0, 4), (1, 3), (1, 4), (2, 3), (2, 4)]);
    }
}
