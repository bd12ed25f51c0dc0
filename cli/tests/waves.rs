//! Progressive delivery end to end with real processes on loopback: a voter, a learner per region (us,
//! eu), a worker, two clusters per region with a manager each (us/c1 has a standby too), four hosts per
//! cluster running service `web` (the C HTTP server of `common::service`, started by its own `activate`,
//! checked by its health endpoint). Each host's `activate` appends `<unix ms> <generation>` to a file, so
//! the test reads when each host switched.
//!
//! Shown, one rollout after another on the same fleet:
//! 1. `cascade deploy --waves '[{hosts = 1}, {percent = 50}, {percent = 100}]' --bake-secs 2 --follow`:
//!    no host switches before its wave opened, each wave opens after the previous one baked, the rollout
//!    ends complete and the CLI exits 0.
//! 2. A build whose health endpoint answers 500, with `on_failure = "rollback"` and a one-host canary in
//!    its `cascade.toml`: the canary fails, the rollout ends rolled back, a new generation restores the
//!    previous build, and no host outside the canary ever started the bad build.
//! 3. A build whose `activate` fails on one host of 16, failure budget 2: complete, the host named.
//! 4. A manual second wave: the rollout waits (hosts outside wave 1 untouched) until `cascade rollout
//!    promote`.
//! 5. The active manager of us/c1 is SIGKILLed mid-rollout: the standby takes over and the rollout
//!    completes; with both managers of us/c1 dead, the next rollout fails at its progress deadline naming
//!    us/c1.

mod common;

use cascade_client::Client;
use cascade_core::api::{AddMemberRequest, SubmitBuildRequest};
use cascade_core::rollout::{admitted, EndState, RolloutProgress};
use cascade_core::state::{DeployOrigin, DesiredVersion, ReplicationStatus};
use cascade_core::{ClusterName, CommitSha, JobId, JobStatus, Region, RepoUrl, ServiceName};
use common::agents::AgentProcess;
use common::builds::{local_stores, TestRepo, WorkerProcess};
use common::service::{http, recipe, service_logs, Reaper, ACTIVATE, SERVER_C};
use common::{free_port, start_nodes_with, wait_healthy, wait_leader, NodeSpec, ADMIN, BUILDER, DEPLOYER, WORKER};
use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

const REGIONS: [&str; 2] = ["us", "eu"];
const CLUSTERS: [&str; 2] = ["c1", "c2"];
const HOSTS_PER_CLUSTER: usize = 4;
const SERVICE: &str = "web";
/// The host whose `activate` of the "fails on one host" build exits 3.
const SICK_HOST: &str = "eu-c2-h3";
const LEASE_TTL_MS: u64 = 3_000;

/// `activate` that first records when it ran and for which generation.
fn logged_activate() -> String {
    format!("echo \"$(date +%s%3N) $CASCADE_GENERATION\" >>\"$CASCADE_RUN_DIR/starts\"; {ACTIVATE}")
}

struct Host {
    agent: AgentProcess,
    port: u16,
    region: Region,
    cluster: ClusterName,
}

impl Host {
    /// `(unix ms, generation)` of every `activate` this host ran.
    fn starts(&self) -> Vec<(u64, u64)> {
        let text = std::fs::read_to_string(self.agent.data_dir.join("services/web/run/starts")).unwrap_or_default();
        text.lines()
            .filter_map(|l| {
                let (at, generation) = l.split_once(' ')?;
                Some((at.trim().parse().ok()?, generation.trim().parse().ok()?))
            })
            .collect()
    }

    /// When this host first started `generation`.
    fn first_start(&self, generation: u64) -> Option<u64> {
        self.starts().into_iter().filter(|(_, g)| *g == generation).map(|(at, _)| at).min()
    }

    fn answers(&self) -> Option<String> {
        http(self.port, "/").filter(|(code, _)| *code == 200).map(|(_, body)| body)
    }

    /// The host's service answers `hello VERSION`; otherwise fails with the host's step logs and starts.
    fn assert_answers(&self, expected: &str) {
        // Bounded: a host reports healthy within a probe interval of its last pass, and a loaded machine
        // may delay the one-connection-at-a-time server's answer a little beyond it.
        let mut answer = self.answers();
        for _ in 0..20 {
            if answer.as_deref() == Some(expected) {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(250));
            answer = self.answers();
        }
        if answer.as_deref() == Some(expected) {
            return;
        }
        let service = self.agent.data_dir.join("services/web");
        let mut logs = String::new();
        for log in ["activate.log", "stop.log", "run/out.log", "run/starts", "run/pid"] {
            let text = std::fs::read_to_string(service.join(log)).unwrap_or_default();
            logs.push_str(&format!("--- {log}\n{text}\n"));
        }
        let agent_log = std::fs::read_to_string(&self.agent.log).unwrap_or_default();
        let tail: Vec<&str> = agent_log.lines().rev().take(30).collect();
        panic!(
            "{} answers {answer:?}, not {expected:?}\n{logs}--- agent log (last lines, newest first)\n{}",
            self.agent.name,
            tail.join("\n")
        );
    }
}

/// `cascade` with the deployer's token against `server`: (exit code, stdout, stderr).
fn cascade(server: &str, args: &[&str]) -> (i32, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_cascade"))
        .args(["--server", server, "--token", DEPLOYER])
        .args(args)
        .output()
        .expect("run cascade");
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    (out.status.code().unwrap_or(-1), text(&out.stdout), text(&out.stderr))
}

async fn build(client: &Client, repo: &TestRepo, commit: &CommitSha) -> JobId {
    let request = SubmitBuildRequest {
        repo: RepoUrl::parse(repo.url()).unwrap(),
        commit: commit.clone(),
        service: ServiceName::parse(SERVICE).unwrap(),
    };
    let id = client.submit_build(&request).await.expect("submit").id;
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        assert!(Instant::now() < deadline, "build {id} not done in time");
        let detail = client.get_build_detail(id).await.expect("build");
        match &detail.job.status {
            JobStatus::Failed { reason } => panic!("build {id} failed: {reason}"),
            JobStatus::Succeeded { .. } => {
                let replicated = detail.artifact_record.as_ref().is_some_and(|r| {
                    REGIONS.iter().all(|region| {
                        r.replication.get(&Region::parse(*region).unwrap()) == Some(&ReplicationStatus::Replicated)
                    })
                });
                if replicated {
                    return id;
                }
            }
            _ => {}
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// Waits until generation `generation` has ended; returns it.
async fn wait_end(dir: &Path, client: &Client, generation: u64, within: Duration) -> DesiredVersion {
    let service = ServiceName::parse(SERVICE).unwrap();
    let deadline = Instant::now() + within;
    loop {
        let status = client.deployment(&service).await.expect("deployment");
        let found = status.desired.iter().chain(&status.history).find(|d| d.generation == generation).cloned();
        if let Some(ended) = found.filter(|d| d.progress.end.is_some()) {
            return ended;
        }
        assert!(
            Instant::now() < deadline,
            "generation {generation} has not ended: {:?}\n{:?}\n{}",
            status.desired.map(|d| d.progress),
            status.rollout,
            service_logs(dir)
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Hosts per cluster, as the gate counts them.
fn cluster_sizes() -> BTreeMap<(Region, ClusterName), u64> {
    let mut sizes = BTreeMap::new();
    for r in REGIONS {
        for c in CLUSTERS {
            sizes.insert((Region::parse(r).unwrap(), ClusterName::parse(c).unwrap()), HOSTS_PER_CLUSTER as u64);
        }
    }
    sizes
}

/// Hosts admitted fleet-wide once the first `waves` waves of `desired` had opened.
fn admitted_after(desired: &DesiredVersion, waves: usize) -> u64 {
    let progress = RolloutProgress { opened: desired.progress.opened[..waves].to_vec(), ..RolloutProgress::default() };
    cluster_sizes().iter().map(|((r, c), hosts)| admitted(&desired.policy, &progress, r, c, *hosts)).sum()
}

/// No host started `desired`'s generation before the wave that admits it opened: before wave k opened,
/// at most the hosts of waves 1..k-1 had started it.
fn assert_wave_order(hosts: &[Host], desired: &DesiredVersion) {
    let generation = desired.generation;
    let opened = &desired.progress.opened;
    for (k, wave) in opened.iter().enumerate() {
        let started_before = hosts.iter().filter(|h| h.first_start(generation).is_some_and(|t| t < wave.at.0)).count();
        let allowed = if k == 0 { 0 } else { admitted_after(desired, k) };
        assert!(
            started_before as u64 <= allowed,
            "generation {generation}: {started_before} hosts started before wave {} opened at {}, only {allowed} were admitted; starts: {:?}",
            k + 1,
            wave.at.0,
            hosts.iter().map(|h| (&h.agent.name, h.first_start(generation))).collect::<Vec<_>>()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn waves_bake_halt_roll_back_wait_for_promote_and_always_end() {
    let dir = tempfile::tempdir().unwrap();
    let _reaper = Reaper(dir.path().to_path_buf());
    let specs = vec![
        NodeSpec { id: 1, port: free_port(), region: "home".into(), voter: true },
        NodeSpec { id: 2, port: free_port(), region: "us".into(), voter: false },
        NodeSpec { id: 3, port: free_port(), region: "eu".into(), voter: false },
    ];
    let stores = local_stores(dir.path(), &REGIONS);
    let _nodes = start_nodes_with(dir.path(), &specs, 300, &|config| {
        config.stores = Some(stores.clone());
        config.replication.poll_interval_ms = 200;
    });
    let urls: Vec<String> = specs.iter().map(|s| s.url()).collect();
    for url in &urls {
        wait_healthy(url, Duration::from_secs(30)).await;
    }
    Client::new(&urls[..1], ADMIN).unwrap().cluster_init().await.expect("init");
    wait_leader(&urls[..1], Duration::from_secs(20)).await;
    let admin = Client::new(&urls[..1], ADMIN).unwrap();
    for learner in &specs[1..] {
        let request = AddMemberRequest {
            id: learner.id,
            addr: learner.addr(),
            region: Region::parse(learner.region.clone()).unwrap(),
            voter: false,
        };
        admin.add_member(&request).await.expect("add learner");
    }
    let servers: Vec<String> = specs.iter().map(|s| s.addr()).collect();
    let _worker = WorkerProcess::start(dir.path(), "w1", &servers, &stores.main, 500);

    let mut managers: BTreeMap<String, AgentProcess> = BTreeMap::new();
    let mut hosts: Vec<Host> = Vec::new();
    for (i, region) in REGIONS.iter().enumerate() {
        let order = vec![specs[1 + i].addr(), specs[0].addr()];
        let store = &stores.regions[*region];
        for cluster in CLUSTERS {
            let name = format!("{region}-{cluster}-a");
            let manager =
                AgentProcess::manager_of(dir.path(), region, cluster, &name, &order, WORKER, store, LEASE_TTL_MS);
            let mut addrs = vec![manager.addr];
            managers.insert(name, manager);
            if (*region, cluster) == ("us", "c1") {
                let name = "us-c1-b".to_string();
                let standby =
                    AgentProcess::manager_of(dir.path(), region, cluster, &name, &order, WORKER, store, LEASE_TTL_MS);
                addrs.push(standby.addr);
                managers.insert(name, standby);
            }
            for h in 0..HOSTS_PER_CLUSTER {
                let name = format!("{region}-{cluster}-h{h}");
                let port = free_port();
                let sick = if name == SICK_HOST { "SICK = \"1\"\n" } else { "" };
                let declaration = format!("services = [\"{SERVICE}\"]\n[env]\nPORT = \"{port}\"\n{sick}");
                let agent = AgentProcess::host_running_with_managers(dir.path(), &name, &addrs, &declaration);
                hosts.push(Host {
                    agent,
                    port,
                    region: Region::parse(*region).unwrap(),
                    cluster: ClusterName::parse(cluster).unwrap(),
                });
            }
        }
    }
    let fleet = hosts.len() as u64;

    let repo = TestRepo::new(dir.path());
    let commit = |message: &str, recipe: String| {
        repo.commit(message, &[("server.c", SERVER_C), ("cascade.toml", recipe.as_str())])
    };
    let activate = logged_activate();
    let canary_rollback = "waves = [{hosts = 1}, {percent = 100}]\non_failure = \"rollback\"";
    let sick_activate = format!("if [ -n \"$SICK\" ]; then echo this host is sick >&2; exit 3; fi; {activate}");
    let commits = [
        commit("v1", recipe("v1", 200, &activate, "")),
        commit("v2 health 500", recipe("v2", 500, &activate, canary_rollback)),
        commit("v3 fails on one host", recipe("v3", 200, &sick_activate, "failure_budget = 2")),
        commit("v4", recipe("v4", 200, &activate, "")),
        commit("v5", recipe("v5", 200, &activate, "waves = [{percent = 50}, {percent = 100}]\nbake_secs = 4")),
        commit("v6", recipe("v6", 200, &activate, "progress_deadline_secs = 6")),
    ];
    let builder = Client::new(&urls[..1], BUILDER).unwrap();
    let mut builds = Vec::new();
    for c in &commits {
        builds.push(build(&builder, &repo, c).await);
    }
    let deployer = Client::new(&urls[..1], DEPLOYER).unwrap();
    let service = ServiceName::parse(SERVICE).unwrap();
    let server = &servers[0];
    let within = Duration::from_secs(180);

    // 1. Three waves with a bake, from the CLI: wave order, bakes, complete, exit 0.
    let (code, stdout, stderr) = cascade(
        server,
        &[
            "deploy",
            "--service",
            SERVICE,
            "--build",
            &builds[0].0.to_string(),
            "--waves",
            "[{hosts = 1}, {percent = 50}, {percent = 100}]",
            "--bake-secs",
            "2",
            "--follow",
            "--follow-timeout",
            "180",
        ],
    );
    assert_eq!(code, 0, "{stdout}\n{stderr}\n{}", service_logs(dir.path()));
    assert!(stdout.contains("waves [1 host, 50 %, 100 %], bake 2 s"), "{stdout}");
    assert!(stderr.contains("wave 1 of 3 (1 host)") && stderr.contains("complete: all 3 waves healthy"), "{stderr}");
    let g1 = wait_end(dir.path(), &deployer, 1, within).await;
    assert_eq!(g1.progress.end.as_ref().map(|e| e.state), Some(EndState::Complete));
    assert_eq!(g1.progress.opened.len(), 3);
    assert_eq!(admitted_after(&g1, 1), 1, "the first wave is one host");
    assert_eq!(admitted_after(&g1, 2), fleet / 2, "the second wave is half of each cluster");
    assert_wave_order(&hosts, &g1);
    for pair in g1.progress.opened.windows(2) {
        assert!(pair[1].at.0 >= pair[0].at.0 + 2_000, "a wave opened before the previous one baked 2 s: {pair:?}");
    }
    for host in &hosts {
        host.assert_answers("hello v1");
    }

    // 2. The canary answers 500: rolled back automatically; no host outside the canary started v2.
    let started = deployer.deploy(&service, builds[1]).await.expect("deploy v2");
    let g2 = wait_end(dir.path(), &deployer, started.generation, within).await;
    let end = g2.progress.end.clone().unwrap();
    assert_eq!(end.state, EndState::RolledBack, "{end:?}");
    assert!(end.reason.contains("wave 1 of 2 (1 host): 1 of 1 hosts failed"), "{}", end.reason);
    assert_eq!(end.hosts.len(), 1, "{end:?}");
    let ran_v2: Vec<&str> =
        hosts.iter().filter(|h| h.first_start(g2.generation).is_some()).map(|h| h.agent.name.as_str()).collect();
    assert_eq!(ran_v2.len(), 1, "only the canary started the bad build: {ran_v2:?}");
    assert!(end.hosts[0].starts_with(ran_v2[0]), "{end:?} vs {ran_v2:?}");
    let restore = wait_end(dir.path(), &deployer, g2.generation + 1, within).await;
    assert_eq!(restore.origin, DeployOrigin::AutoRollback { of: g2.generation });
    assert_eq!(restore.build, builds[0], "the rollback deploys the previous build");
    assert_eq!(restore.progress.end.as_ref().map(|e| e.state), Some(EndState::Complete), "{:?}", restore.progress);
    for host in &hosts {
        host.assert_answers("hello v1");
        // Hosts that never left v1 were not restarted by the rollback.
        assert!(host.first_start(restore.generation).is_none() || ran_v2.contains(&host.agent.name.as_str()));
    }
    let (_, status, _) = cascade(server, &["status", "--service", SERVICE]);
    assert!(status.contains("complete: its one wave healthy"), "{status}");

    // 3. One host of 16 fails, within a budget of 2: complete, the host named, it runs v1 again.
    let started = deployer.deploy(&service, builds[2]).await.expect("deploy v3");
    let g3 = wait_end(dir.path(), &deployer, started.generation, within).await;
    let end = g3.progress.end.clone().unwrap();
    assert_eq!(end.state, EndState::Complete, "{end:?}");
    assert!(end.reason.contains("1 failed hosts run their previous release"), "{}", end.reason);
    assert_eq!(end.hosts.len(), 1, "{end:?}");
    assert!(end.hosts[0].starts_with(SICK_HOST) && end.hosts[0].contains("exited 3"), "{end:?}");
    for host in &hosts {
        let expected = if host.agent.name == SICK_HOST { "hello v1" } else { "hello v3" };
        host.assert_answers(expected);
    }

    // 4. A manual second wave: waits, hosts outside wave 1 untouched, until `cascade rollout promote`.
    let (code, stdout, stderr) = cascade(
        server,
        &[
            "deploy",
            "--service",
            SERVICE,
            "--build",
            &builds[3].0.to_string(),
            "--waves",
            "[{percent = 25}, {percent = 100, approval = \"manual\"}]",
        ],
    );
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    let g4 = deployer.deployment(&service).await.unwrap().desired.unwrap().generation;
    let deadline = Instant::now() + within;
    let waiting = loop {
        let desired = deployer.deployment(&service).await.unwrap().desired.unwrap();
        if desired.progress.awaiting_approval {
            break desired;
        }
        assert!(Instant::now() < deadline, "never waited for Promote: {:?}", desired.progress);
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (_, status, _) = cascade(server, &["status", "--service", SERVICE]);
    assert!(status.contains("wave 2 (100 % (manual)) waits for Promote"), "{status}");
    let on_v4 = hosts.iter().filter(|h| h.first_start(g4).is_some()).count() as u64;
    assert_eq!(on_v4, admitted_after(&waiting, 1), "only wave 1 switched while waiting");
    assert_eq!(on_v4, fleet / 4);
    let (code, stdout, stderr) = cascade(server, &["rollout", "promote", "--service", SERVICE]);
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    let g4 = wait_end(dir.path(), &deployer, g4, within).await;
    assert_eq!(g4.progress.end.as_ref().map(|e| e.state), Some(EndState::Complete), "{:?}", g4.progress);
    assert_wave_order(&hosts, &g4);
    for host in &hosts {
        host.assert_answers("hello v4");
    }
    let (code, _, stderr) = cascade(server, &["rollout", "promote", "--service", SERVICE]);
    assert_ne!(code, 0, "promoting an ended rollout is refused");
    assert!(stderr.contains("generation"), "{stderr}");

    // 5. SIGKILL us/c1's active manager while wave 1 bakes: the standby takes over and completes.
    let g5 = deployer.deploy(&service, builds[4]).await.expect("deploy v5").generation;
    let deadline = Instant::now() + within;
    loop {
        let desired = deployer.deployment(&service).await.unwrap().desired.unwrap();
        if desired.progress.healthy_since.is_some() && desired.progress.opened.len() == 1 {
            break;
        }
        assert!(Instant::now() < deadline, "wave 1 never baked: {:?}", desired.progress);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let status = deployer.deployment(&service).await.unwrap();
    let holder = status.rollout[&Region::parse("us").unwrap()][&ClusterName::parse("c1").unwrap()]
        .reported_by
        .clone()
        .expect("us/c1 reported by its lease holder");
    managers.get_mut(&holder).expect("the holder is one of ours").kill();
    let g5 = wait_end(dir.path(), &deployer, g5, within).await;
    assert_eq!(g5.progress.end.as_ref().map(|e| e.state), Some(EndState::Complete), "{:?}", g5.progress);
    let status = deployer.deployment(&service).await.unwrap();
    let c1 = &status.rollout[&Region::parse("us").unwrap()][&ClusterName::parse("c1").unwrap()];
    assert_ne!(c1.reported_by.as_deref(), Some(holder.as_str()), "the standby reported the end");
    for host in &hosts {
        host.assert_answers("hello v5");
    }

    // Both managers of us/c1 dead: the next rollout fails at its deadline and names us/c1.
    for name in ["us-c1-a", "us-c1-b"] {
        managers.get_mut(name).unwrap().kill();
    }
    let g6 = deployer.deploy(&service, builds[5]).await.expect("deploy v6").generation;
    let g6 = wait_end(dir.path(), &deployer, g6, within).await;
    let end = g6.progress.end.clone().unwrap();
    assert_eq!(end.state, EndState::Failed, "{end:?}");
    assert!(end.reason.contains("progress_deadline_secs = 6") && end.reason.contains("us/c1"), "{}", end.reason);
    for host in hosts.iter().filter(|h| h.region.as_str() == "us" && h.cluster.as_str() == "c1") {
        host.assert_answers("hello v5");
    }
    drop(managers);
}
