//! Every kind of Cascade process serves Prometheus `/metrics`: a real node, worker, region manager and two
//! host agents on loopback run a small build and a deploy, then each `/metrics` is fetched, parsed strictly
//! (OpenMetrics text) and checked for the metrics docs/METRICS.md lists, with values that match what happened.

mod common;

use cascade_client::blobs::StoreConfig;
use cascade_client::Client;
use cascade_core::api::SubmitBuildRequest;
use cascade_core::state::ReplicationStatus;
use cascade_core::{Digest, JobId, JobStatus, Region, RepoUrl, ServiceName};
use common::agents::AgentProcess;
use common::builds::{local_stores, TestRepo};
use common::{free_port, single_node_with, BUILDER, DEPLOYER, WORKER};
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const SERVICE: &str = "app";
const CHUNK_SIZE: u64 = 64 * 1024;

/// One sample line: metric name, labels, value.
#[derive(Debug)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// A parsed exposition: the declared type of each family and every sample.
#[derive(Debug)]
struct Exposition {
    types: HashMap<String, String>,
    samples: Vec<Sample>,
}

impl Exposition {
    /// Parses the OpenMetrics text format strictly: every line is a known comment or a well-formed sample of a
    /// declared family, and the text ends with `# EOF`.
    fn parse(text: &str) -> Result<Self, String> {
        let mut types = HashMap::new();
        let mut samples = Vec::new();
        let mut saw_eof = false;
        for (n, line) in text.lines().enumerate() {
            let at = |what: &str| format!("line {}: {what}: {line:?}", n + 1);
            if saw_eof {
                return Err(at("text after # EOF"));
            }
            if line == "# EOF" {
                saw_eof = true;
                continue;
            }
            if let Some(rest) = line.strip_prefix("# ") {
                let mut parts = rest.splitn(3, ' ');
                let (keyword, name, value) = (parts.next(), parts.next(), parts.next());
                let (Some(keyword), Some(name)) = (keyword, name) else { return Err(at("bad comment")) };
                if !valid_name(name) {
                    return Err(at("bad metric name"));
                }
                match keyword {
                    "HELP" | "UNIT" => {}
                    "TYPE" => {
                        let kind = value.ok_or_else(|| at("TYPE without a type"))?;
                        let known = ["counter", "gauge", "histogram", "summary", "info", "stateset", "unknown"];
                        if !known.contains(&kind) {
                            return Err(at("unknown type"));
                        }
                        if types.insert(name.to_string(), kind.to_string()).is_some() {
                            return Err(at("family declared twice"));
                        }
                    }
                    _ => return Err(at("unknown comment keyword")),
                }
                continue;
            }
            let sample = parse_sample(line).map_err(|e| at(&e))?;
            if family_of(&sample.name, &types).is_none() {
                return Err(at("sample of an undeclared family"));
            }
            samples.push(sample);
        }
        if !saw_eof {
            return Err("no # EOF at the end".into());
        }
        Ok(Self { types, samples })
    }

    /// The declared type of a family.
    fn kind(&self, family: &str) -> Option<&str> {
        self.types.get(family).map(String::as_str)
    }

    /// Samples named `name` whose labels include every pair of `labels`.
    fn matching<'a>(&'a self, name: &'a str, labels: &'a [(&str, &str)]) -> impl Iterator<Item = &'a Sample> + 'a {
        self.samples.iter().filter(move |s| {
            s.name == name && labels.iter().all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
    }

    /// The value of the one sample named `name` with `labels`; panics if there is not exactly one.
    fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let found: Vec<&Sample> = self.matching(name, labels).collect();
        assert_eq!(found.len(), 1, "expected one sample {name}{labels:?}, found {found:?}");
        found[0].value
    }

    /// Sum over the samples named `name` with `labels`.
    fn sum(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.matching(name, labels).map(|s| s.value).sum()
    }

    /// Asserts that every family in `expected` is declared with its type.
    fn assert_families(&self, who: &str, expected: &[(&str, &str)]) {
        for (family, kind) in expected {
            assert_eq!(self.kind(family), Some(*kind), "{who}: family {family} missing or mistyped");
        }
    }
}

fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

/// The family a sample belongs to: its own name, or its name less a suffix the family's type allows.
fn family_of<'a>(name: &'a str, types: &HashMap<String, String>) -> Option<&'a str> {
    if types.contains_key(name) {
        return Some(name);
    }
    let suffixes: &[(&str, &[&str])] = &[
        ("_total", &["counter"]),
        ("_created", &["counter", "histogram", "summary"]),
        ("_bucket", &["histogram"]),
        ("_count", &["histogram", "summary"]),
        ("_sum", &["histogram", "summary"]),
        ("_info", &["info"]),
    ];
    suffixes.iter().find_map(|(suffix, kinds)| {
        let family = name.strip_suffix(suffix)?;
        types.get(family).filter(|t| kinds.contains(&t.as_str())).map(|_| family)
    })
}

/// `name{label="value",...} value [timestamp]`.
fn parse_sample(line: &str) -> Result<Sample, String> {
    let name_end = line.find(['{', ' ']).ok_or("no value")?;
    let name = &line[..name_end];
    if !valid_name(name) {
        return Err("bad metric name".into());
    }
    let mut rest = &line[name_end..];
    let mut labels = BTreeMap::new();
    if let Some(mut inner) = rest.strip_prefix('{') {
        loop {
            if let Some(after) = inner.strip_prefix('}') {
                rest = after;
                break;
            }
            let eq = inner.find('=').ok_or("label without =")?;
            let key = &inner[..eq];
            if !valid_name(key) || key.contains(':') {
                return Err(format!("bad label name {key:?}"));
            }
            let mut chars = inner[eq + 1..].char_indices();
            if chars.next().map(|(_, c)| c) != Some('"') {
                return Err("label value not quoted".into());
            }
            let mut value = String::new();
            let mut end = None;
            while let Some((i, c)) = chars.next() {
                match c {
                    '"' => {
                        end = Some(eq + 1 + i + 1);
                        break;
                    }
                    '\\' => match chars.next().map(|(_, c)| c) {
                        Some('n') => value.push('\n'),
                        Some('"') => value.push('"'),
                        Some('\\') => value.push('\\'),
                        _ => return Err("bad escape in label value".into()),
                    },
                    '\n' => return Err("newline in label value".into()),
                    c => value.push(c),
                }
            }
            let end = end.ok_or("unterminated label value")?;
            if labels.insert(key.to_string(), value).is_some() {
                return Err(format!("label {key} repeated"));
            }
            inner = &inner[end..];
            if let Some(after) = inner.strip_prefix(',') {
                inner = after;
            } else if !inner.starts_with('}') {
                return Err("labels not separated by commas".into());
            }
        }
    }
    let rest = rest.strip_prefix(' ').ok_or("no space before the value")?;
    let mut fields = rest.split(' ');
    let value = fields.next().ok_or("no value")?;
    let value: f64 = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        "NaN" => f64::NAN,
        v => v.parse().map_err(|_| format!("bad value {v:?}"))?,
    };
    if let Some(timestamp) = fields.next() {
        timestamp.parse::<f64>().map_err(|_| format!("bad timestamp {timestamp:?}"))?;
    }
    if fields.next().is_some() {
        return Err("trailing fields".into());
    }
    Ok(Sample { name: name.to_string(), labels, value })
}

/// GETs `/metrics` and parses it.
async fn scrape(who: &str, addr: &str) -> Exposition {
    let response = reqwest::Client::new()
        .get(format!("http://{addr}/metrics"))
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{who}: GET /metrics: {e}"));
    assert!(response.status().is_success(), "{who}: {}", response.status());
    let content_type = response.headers()[reqwest::header::CONTENT_TYPE].to_str().unwrap().to_string();
    assert!(content_type.starts_with("application/openmetrics-text"), "{who}: content type {content_type}");
    let text = response.text().await.unwrap();
    Exposition::parse(&text).unwrap_or_else(|e| panic!("{who}: {e}\n{text}"))
}

/// A `cascade worker` serving `/metrics`, killed when dropped.
struct Worker(Child);

impl Worker {
    fn start(dir: &Path, servers: &[String], store: &StoreConfig, metrics: SocketAddr) -> Self {
        #[derive(serde::Serialize)]
        struct Section<'a> {
            store: &'a StoreConfig,
        }
        let config = format!(
            "id = \"w1\"\nservers = {servers:?}\ntoken = \"{WORKER}\"\nwork_dir = {:?}\nheartbeat_interval_ms = 200\nclaim_wait_secs = 2\nchunk_size = {CHUNK_SIZE}\nmetrics_listen = \"{metrics}\"\n\n{}",
            dir.join("w1-work").display().to_string(),
            toml::to_string(&Section { store }).unwrap(),
        );
        let path = dir.join("w1.toml");
        std::fs::write(&path, config).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_cascade"))
            .args(["worker", "--config"])
            .arg(&path)
            .env("CASCADE_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("w1.log")).unwrap())
            .spawn()
            .expect("start worker");
        Self(child)
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// Waits until build `id` succeeded and its artifact is replicated in `us`; returns its digest and size.
async fn wait_built(client: &Client, id: JobId) -> (Digest, u64) {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        assert!(Instant::now() < deadline, "build {id} not built and replicated in time");
        let detail = client.get_build_detail(id).await.expect("build");
        match &detail.job.status {
            JobStatus::Failed { reason } => panic!("build failed: {reason}"),
            JobStatus::Succeeded { artifact } => {
                let us = Region::parse("us").unwrap();
                let replicated = detail
                    .artifact_record
                    .as_ref()
                    .is_some_and(|r| r.replication.get(&us) == Some(&ReplicationStatus::Replicated));
                if replicated {
                    return (artifact.digest.clone(), artifact.size);
                }
            }
            _ => {}
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Waits until the node's state shows `hosts` hosts active (of `hosts`) in `us` for `generation`.
async fn wait_rollout(client: &Client, generation: u64, hosts: u64) {
    let service = ServiceName::parse(SERVICE).unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let status = client.deployment(&service).await.expect("deployment");
        let done = status.desired.as_ref().is_some_and(|d| d.generation == generation)
            && status
                .rollout
                .get(&Region::parse("us").unwrap())
                .and_then(|clusters| clusters.values().next())
                .is_some_and(|c| c.counts.active == hosts && c.counts.total == hosts);
        if done {
            return;
        }
        assert!(Instant::now() < deadline, "rollout of generation {generation} not complete: {:?}", status.rollout);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_process_serves_parseable_metrics_that_match_what_happened() {
    let dir = tempfile::tempdir().unwrap();
    let stores = local_stores(dir.path(), &["us"]);
    let node_stores = stores.clone();
    let node = single_node_with(dir.path(), 300, &move |config| {
        config.stores = Some(node_stores.clone());
        config.replication.poll_interval_ms = 200;
    })
    .await;
    let servers = vec![node.spec.addr()];

    let repo = TestRepo::new(dir.path());
    // ~340 KiB: six 64 KiB chunks. The sleep lets the worker heartbeat during the build.
    let recipe = "[build]\ncommand = \"sleep 1 && mkdir -p out && seq 1 60000 > out/app\"\nartifact = \"out/app\"\n";
    let commit = repo.commit("v1", &[("cascade.toml", recipe)]);

    let worker_metrics = loopback(free_port());
    let manager_metrics = loopback(free_port());
    let host_metrics = [loopback(free_port()), loopback(free_port())];
    let _worker = Worker::start(dir.path(), &servers, &stores.main, worker_metrics);
    let region_store = stores.regions["us"].clone();
    let manager =
        AgentProcess::manager_with_metrics(dir.path(), "us", &servers, WORKER, &region_store, Some(manager_metrics));
    let _hosts: Vec<AgentProcess> = host_metrics
        .iter()
        .enumerate()
        .map(|(i, m)| AgentProcess::host_with_metrics(dir.path(), &format!("host{i}"), manager.addr, false, Some(*m)))
        .collect();

    let builder = node.client(BUILDER);
    let request = SubmitBuildRequest {
        repo: RepoUrl::parse(repo.url()).unwrap(),
        commit,
        service: ServiceName::parse(SERVICE).unwrap(),
    };
    let id = builder.submit_build(&request).await.expect("submit").id;
    let (digest, size) = wait_built(&builder, id).await;
    let chunks = size.div_ceil(CHUNK_SIZE);
    assert!(chunks > 1, "the artifact spans several chunks ({size} bytes)");
    let deployer = node.client(DEPLOYER);
    let generation = deployer.deploy(&ServiceName::parse(SERVICE).unwrap(), id).await.expect("deploy").generation;
    wait_rollout(&deployer, generation, host_metrics.len() as u64).await;

    // The node.
    let m = scrape("node", &node.spec.addr()).await;
    m.assert_families(
        "node",
        &[
            ("cascade_raft_term", "gauge"),
            ("cascade_raft_last_log_index", "gauge"),
            ("cascade_raft_applied_index", "gauge"),
            ("cascade_raft_is_leader", "gauge"),
            ("cascade_raft_member_lag_entries", "gauge"),
            ("cascade_jobs", "gauge"),
            ("cascade_queue_depth", "gauge"),
            ("cascade_running_builds", "gauge"),
            ("cascade_workers_seen", "gauge"),
            ("cascade_claim_wait_seconds", "histogram"),
            ("cascade_writes", "counter"),
            ("cascade_write_seconds", "histogram"),
            ("cascade_artifacts_replication", "gauge"),
            ("cascade_rollout_hosts", "gauge"),
            ("cascade_rollout_generation", "gauge"),
        ],
    );
    assert_eq!(m.value("cascade_raft_is_leader", &[]), 1.0);
    assert!(m.value("cascade_raft_term", &[]) >= 1.0);
    assert!(m.value("cascade_raft_applied_index", &[]) > 0.0);
    assert!(m.value("cascade_raft_applied_index", &[]) <= m.value("cascade_raft_last_log_index", &[]));
    assert_eq!(m.value("cascade_jobs", &[("status", "succeeded")]), 1.0);
    assert_eq!(m.value("cascade_queue_depth", &[]), 0.0);
    assert_eq!(m.value("cascade_running_builds", &[]), 0.0);
    assert_eq!(m.value("cascade_workers_seen", &[]), 1.0);
    assert_eq!(m.value("cascade_claim_wait_seconds_count", &[]), 1.0);
    assert_eq!(m.value("cascade_claim_wait_seconds_bucket", &[("le", "+Inf")]), 1.0);
    assert!(m.value("cascade_writes_total", &[("command", "claim"), ("outcome", "accepted")]) >= 1.0);
    assert_eq!(m.value("cascade_artifacts_replication", &[("region", "us"), ("state", "replicated")]), 1.0);
    assert_eq!(m.value("cascade_artifacts_replication", &[("region", "us"), ("state", "error")]), 0.0);
    let rollout = |state| m.value("cascade_rollout_hosts", &[("service", SERVICE), ("region", "us"), ("state", state)]);
    assert_eq!(rollout("total"), 2.0);
    assert_eq!(rollout("active"), rollout("total"));
    assert_eq!(m.value("cascade_rollout_generation", &[("service", SERVICE)]), generation as f64);

    // The worker.
    let m = scrape("worker", &worker_metrics.to_string()).await;
    m.assert_families(
        "worker",
        &[
            ("cascade_worker_builds_started", "counter"),
            ("cascade_worker_builds_finished", "counter"),
            ("cascade_worker_running_builds", "gauge"),
            ("cascade_worker_claim_wait_seconds", "histogram"),
            ("cascade_worker_build_seconds", "histogram"),
            ("cascade_worker_artifact_uploaded_bytes", "counter"),
            ("cascade_worker_heartbeats", "counter"),
            ("cascade_worker_last_heartbeat_timestamp_seconds", "gauge"),
        ],
    );
    assert_eq!(m.value("cascade_worker_builds_started_total", &[]), 1.0);
    assert_eq!(m.value("cascade_worker_builds_finished_total", &[("outcome", "succeeded")]), 1.0);
    assert_eq!(m.sum("cascade_worker_builds_finished_total", &[]), 1.0);
    assert_eq!(m.value("cascade_worker_running_builds", &[]), 0.0);
    assert_eq!(m.value("cascade_worker_claim_wait_seconds_count", &[]), 1.0);
    assert!(m.value("cascade_worker_build_seconds_sum", &[]) >= 1.0, "the build sleeps 1 s");
    assert_eq!(m.value("cascade_worker_artifact_uploaded_bytes_total", &[]), size as f64);
    assert!(m.value("cascade_worker_heartbeats_total", &[("outcome", "ok")]) >= 1.0);
    assert!(m.value("cascade_worker_last_heartbeat_timestamp_seconds", &[]) > 1.6e9, "a Unix time");

    // The manager.
    let m = scrape("manager", &manager_metrics.to_string()).await;
    m.assert_families(
        "manager",
        &[
            ("cascade_manager_rollout_hosts", "gauge"),
            ("cascade_manager_rollout_generation", "gauge"),
            ("cascade_manager_seed_chunks_served", "counter"),
            ("cascade_manager_seed_sent_bytes", "counter"),
            ("cascade_manager_bad_senders", "gauge"),
            ("cascade_manager_bad_chunk_reports", "counter"),
            ("cascade_manager_hosts_connected", "gauge"),
        ],
    );
    let rollout = |state| m.value("cascade_manager_rollout_hosts", &[("service", SERVICE), ("state", state)]);
    assert_eq!(rollout("total"), 2.0);
    assert_eq!(rollout("active"), rollout("total"));
    assert_eq!(rollout("failed"), 0.0);
    assert_eq!(m.value("cascade_manager_rollout_generation", &[("service", SERVICE)]), generation as f64);
    assert_eq!(m.value("cascade_manager_hosts_connected", &[]), 2.0);
    assert_eq!(m.value("cascade_manager_bad_senders", &[]), 0.0);
    let seed_chunks = m.value("cascade_manager_seed_chunks_served_total", &[]);
    assert!(seed_chunks >= 1.0, "the seed served the first copies");
    let seed_bytes = m.value("cascade_manager_seed_sent_bytes_total", &[]);
    assert!(seed_bytes > 0.0 && seed_bytes <= seed_chunks * CHUNK_SIZE as f64);

    // The hosts: each received and verified every chunk, from the seed or the other host.
    let mut from_seed = 0.0;
    for (i, addr) in host_metrics.iter().enumerate() {
        let who = format!("host{i}");
        let m = scrape(&who, &addr.to_string()).await;
        m.assert_families(
            &who,
            &[
                ("cascade_host_received_bytes", "counter"),
                ("cascade_host_sent_bytes", "counter"),
                ("cascade_host_chunks_verified", "counter"),
                ("cascade_host_chunks_sent", "counter"),
                ("cascade_host_chunk_verification_failures", "counter"),
                ("cascade_host_fetch_failures", "counter"),
                ("cascade_host_activations", "counter"),
                ("cascade_host_releases_active", "gauge"),
                ("cascade_host_release_info", "gauge"),
            ],
        );
        assert_eq!(m.value("cascade_host_chunks_verified_total", &[]), chunks as f64, "{who}");
        assert!(m.sum("cascade_host_received_bytes_total", &[]) >= size as f64, "{who}");
        assert!(m
            .samples
            .iter()
            .filter(|s| s.name == "cascade_host_received_bytes_total")
            .all(|s| s.labels.contains_key("peer")));
        from_seed += m.sum("cascade_host_received_bytes_total", &[("peer", &manager.addr.to_string())]);
        assert_eq!(m.sum("cascade_host_chunk_verification_failures_total", &[]), 0.0, "{who}");
        assert_eq!(m.value("cascade_host_activations_total", &[("outcome", "ok")]), 1.0, "{who}");
        assert_eq!(m.value("cascade_host_releases_active", &[]), 1.0, "{who}");
        assert_eq!(m.value("cascade_host_release_info", &[("service", SERVICE), ("digest", digest.as_str())]), 1.0);
    }
    assert!(from_seed > 0.0 && from_seed <= seed_bytes, "hosts received {from_seed} of the seed's {seed_bytes} bytes");
    println!("metrics: {chunks} chunks of {size} bytes; the seed sent {seed_bytes} bytes");
}

#[test]
fn the_parser_rejects_malformed_text() {
    let good = "# TYPE a counter\n# HELP a A.\na_total{x=\"1\",y=\"q\\\"\"} 3\n# TYPE b gauge\nb 1.5\n# EOF\n";
    let parsed = Exposition::parse(good).expect("valid");
    assert_eq!(parsed.value("a_total", &[("y", "q\"")]), 3.0);
    assert_eq!(parsed.value("b", &[]), 1.5);
    for bad in [
        "b 1\n# EOF\n",
        "# TYPE b gauge\nb 1\n",
        "# TYPE b gauge\nb{x=1} 1\n# EOF\n",
        "# TYPE b gauge\nb one\n# EOF\n",
        "# TYPE b gauge\nb 1 2 3\n# EOF\n",
        "# TYPE b gauge\nb_total 1\n# EOF\n",
        "# TYPE b gauge\n# EOF\nb 1\n",
    ] {
        assert!(Exposition::parse(bad).is_err(), "accepted {bad:?}");
    }
}
