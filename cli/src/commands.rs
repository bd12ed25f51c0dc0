//! What each subcommand does; printing is the only logic that lives here.

use crate::Output;
use anyhow::Context;
use cascade_client::Client;
use cascade_core::api::{AddMemberRequest, SubmitBuildRequest};
use cascade_core::rollout::EndState;
use cascade_core::{CommitSha, Job, JobId, JobStatus, Region, RepoUrl, ServiceName};
use clap::Subcommand;
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

/// `cascade worker --config FILE`
pub async fn run_worker(config: &Path) -> anyhow::Result<ExitCode> {
    let config = cascade_worker::WorkerConfig::load(config)?;
    let worker = cascade_worker::Worker::new(config)?;
    let (stop, stopped) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        cascade_raft_node::server::shutdown_signal().await;
        let _ = stop.send(true);
    });
    cascade_worker::run(worker, stopped).await?;
    Ok(ExitCode::SUCCESS)
}

/// `cascade agent …`
#[derive(Subcommand)]
pub enum AgentCommand {
    /// The regional manager of one cluster of machines.
    Manager {
        /// Its config file.
        #[arg(long)]
        config: PathBuf,
    },
    /// The host agent of one machine.
    Host {
        /// Its config file.
        #[arg(long)]
        config: PathBuf,
    },
}

/// `cascade certs …`
#[derive(Subcommand)]
pub enum CertsCommand {
    /// Create a cluster CA (`ca.pem`, `ca.key`) in a directory.
    Ca {
        /// Where to write it.
        #[arg(long)]
        dir: PathBuf,
    },
    /// Issue an agent certificate (`NAME.pem`, `NAME.key`) signed by the CA.
    Issue {
        /// Directory of the CA.
        #[arg(long)]
        ca: PathBuf,
        /// The agent's name.
        #[arg(long)]
        name: String,
        /// Where to write it.
        #[arg(long)]
        out: PathBuf,
    },
}

fn stop_on_signal() -> tokio::sync::watch::Receiver<bool> {
    let (stop, stopped) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        cascade_raft_node::server::shutdown_signal().await;
        let _ = stop.send(true);
    });
    stopped
}

/// `cascade agent manager|host --config FILE`
pub async fn agent(cmd: AgentCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        AgentCommand::Manager { config } => {
            let config = cascade_region_agent::manager::ManagerConfig::load(&config)?;
            cascade_region_agent::manager::run(config, stop_on_signal()).await?;
        }
        AgentCommand::Host { config } => {
            let config = cascade_region_agent::host::HostConfig::load(&config)?;
            cascade_region_agent::host::run(config, stop_on_signal()).await?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `cascade certs ca|issue`
pub fn certs(cmd: CertsCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        CertsCommand::Ca { dir } => {
            cascade_region_agent::tls::create_ca(&dir)?;
            eprintln!("CA written to {}/ca.pem (keep {}/ca.key secret)", dir.display(), dir.display());
        }
        CertsCommand::Issue { ca, name, out } => {
            cascade_region_agent::tls::issue(&ca, &name, &out)?;
            eprintln!("certificate written to {}/{name}.pem and {name}.key", out.display());
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `--follow` of `cascade deploy` and `cascade rollback`.
#[derive(clap::Args, Clone, Copy)]
pub struct FollowArgs {
    /// Wait until the rollout ends: exit 0 when it completes, 1 when it failed, rolled back, was aborted or superseded.
    #[arg(long)]
    follow: bool,
    /// With --follow: give up waiting after this many seconds (the rollout itself goes on).
    #[arg(long, default_value_t = 1800)]
    follow_timeout: u64,
}

/// `cascade deploy` (with a build) and `cascade rollback` (without).
pub async fn deploy(
    server: &str,
    token: &str,
    output: Output,
    service: ServiceName,
    build: Option<(u64, crate::rollout::RolloutArgs)>,
    follow: FollowArgs,
) -> anyhow::Result<ExitCode> {
    let client = client(server, token)?;
    let desired = match build {
        Some((build, rollout)) => client.deploy_with(&service, JobId(build), rollout.section()?).await?,
        None => client.rollback(&service).await?,
    };
    print(output, &desired, |d| {
        let waves: Vec<String> = d.policy.waves.iter().map(cascade_core::rollout::Wave::describe).collect();
        format!(
            "{} generation {}: build {} ({}); waves [{}], bake {} s, failure budget {}, on failure {}",
            d.service,
            d.generation,
            d.build,
            d.artifact.digest,
            waves.join(", "),
            d.policy.bake_secs,
            d.policy.failure_budget.describe(),
            d.policy.on_failure.name()
        )
    })?;
    if !follow.follow {
        return Ok(ExitCode::SUCCESS);
    }
    let limit = Duration::from_secs(follow.follow_timeout);
    let followed = crate::follow::rollout(&client, &service, desired.generation, limit).await?;
    let t = followed.totals;
    let end = &followed.end;
    let hosts = if end.hosts.is_empty() { String::new() } else { format!(" (hosts: {})", end.hosts.join(", ")) };
    // After a roll back the counts are the rolled-back generation's last (hosts on their way back), which
    // say less than the reason does; the next generation's status says where the hosts are.
    let counts = match end.state {
        EndState::RolledBack => String::new(),
        _ => format!("; {}/{} hosts active, {} failed", t.active, t.total, t.failed),
    };
    eprintln!("{service} generation {}: {}: {}{hosts}{counts}", desired.generation, end.state.name(), end.reason);
    if let (EndState::RolledBack, Some(next)) = (end.state, followed.next_generation) {
        eprintln!("{service}: generation {next} restores the previous build: `cascade status --service {service}`");
    }
    Ok(if end.state == EndState::Complete { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

/// `cascade status --service S`: the desired version, replication and rollout counts per region.
pub async fn service_status(
    server: &str,
    token: &str,
    output: Output,
    service: ServiceName,
) -> anyhow::Result<ExitCode> {
    let client = client(server, token)?;
    let status = client.deployment(&service).await?;
    print(output, &status, |s| {
        let Some(d) = &s.desired else {
            return format!("{service}: never deployed");
        };
        let t = crate::follow::totals(s);
        let stage = cascade_core::rollout::describe_stage(
            &d.policy,
            &d.progress,
            d.control,
            cascade_core::UnixMillis(crate::follow::now_ms()),
        );
        let mut out = format!(
            "{service}: generation {} = build {} ({}), set by {}\n  rollout: {stage}\n  hosts: {}/{} healthy, {} failed",
            d.generation, d.build, d.artifact.digest, d.set_by, t.active, t.total, t.failed
        );
        if let Some(end) = d.progress.end.as_ref().filter(|e| !e.hosts.is_empty()) {
            out.push_str(&format!("\n  {} named: {}", end.state.name(), end.hosts.join(", ")));
        }
        let mut failures = Vec::new();
        for (region, replication) in &s.replication {
            let counts = s.rollout.get(region).map(|clusters| {
                clusters
                    .iter()
                    .map(|(c, r)| {
                        for f in &r.failures.hosts {
                            failures.push(format!("  {region}/{c} {}: {}", f.host, f.reason.replace('\n', "\n      ")));
                        }
                        if r.failures.more > 0 {
                            failures.push(format!("  {region}/{c}: and {} more failed hosts", r.failures.more));
                        }
                        cluster_line(c.as_str(), &r.counts, service.as_str(), !d.artifact.deploy.placement.is_empty())
                    })
                    .collect::<Vec<_>>()
            });
            out.push_str(&format!(
                "\n  {region}: artifact {}; {}",
                serde_json::to_string(replication).unwrap_or_default().trim_matches('"'),
                counts.map_or("no report yet".into(), |c| c.join(", "))
            ));
        }
        if !failures.is_empty() {
            out.push_str("\nfailed hosts (back on their previous release):\n");
            out.push_str(&failures.join("\n"));
        }
        out
    })?;
    Ok(ExitCode::SUCCESS)
}

/// One cluster's counts in words; says so when none of its hosts runs the service (or the placement
/// matches none of them).
fn cluster_line(cluster: &str, c: &cascade_core::state::RolloutCounts, service: &str, placed: bool) -> String {
    if c.total == 0 && c.cluster_hosts > 0 && placed {
        return format!("{cluster}: placement matches none of its {} hosts", c.cluster_hosts);
    }
    if c.total == 0 && c.cluster_hosts > 0 {
        return format!("{cluster}: none of its {} hosts runs {service}", c.cluster_hosts);
    }
    if c.total == 0 {
        return format!("{cluster}: no host runs this service");
    }
    let mut line = format!("{cluster}: {}/{} healthy", c.active, c.total);
    for (n, what) in
        [(c.fetching, "fetching"), (c.verified, "verified"), (c.activating, "activating"), (c.failed, "failed")]
    {
        if n > 0 {
            line.push_str(&format!(", {n} {what}"));
        }
    }
    line
}

/// `cascade cluster …`
#[derive(Subcommand)]
pub enum ClusterCommand {
    /// Initialize the cluster with the node at --server and the voters in its config.
    Init,
    /// Show members, roles, regions, leader and lag.
    Status,
    /// Add a learner (a read replica, typically one per region).
    AddLearner(MemberArgs),
    /// Add a voter (added as a learner first, promoted once caught up).
    AddVoter(MemberArgs),
    /// Save a consistent backup of the cluster's state to a file (admin token); `cascade node restore` makes
    /// a new cluster from it.
    Backup {
        /// Where to write it (a temp file beside it, renamed into place once complete and verified).
        #[arg(long)]
        out: PathBuf,
    },
    /// Remove a voter or learner (stop its process afterwards; refuses to remove the last voter).
    Remove {
        /// The member's id.
        #[arg(long)]
        id: u64,
    },
}

/// The new member of `add-learner` and `add-voter`.
#[derive(clap::Args)]
pub struct MemberArgs {
    /// New node's id.
    #[arg(long)]
    id: u64,
    /// Its host:port.
    #[arg(long)]
    addr: String,
    /// Its region.
    #[arg(long)]
    region: Region,
}

/// `cascade build …`
#[derive(Subcommand)]
pub enum BuildCommand {
    /// Queue a build of one commit.
    Submit {
        /// Git repository (URL or absolute path).
        #[arg(long)]
        repo: RepoUrl,
        /// Full 40-character commit SHA.
        #[arg(long)]
        commit: CommitSha,
        /// Service the artifact is for.
        #[arg(long)]
        service: ServiceName,
        /// Wait until the build ends; exit 0 only if it succeeded.
        #[arg(long)]
        follow: bool,
        /// With --follow: give up waiting after this many seconds (the build itself goes on).
        #[arg(long, default_value_t = 3600)]
        follow_timeout: u64,
    },
    /// List builds, newest first.
    List {
        /// Only this service.
        #[arg(long)]
        service: Option<ServiceName>,
        /// Only this status.
        #[arg(long)]
        status: Option<String>,
        /// How many.
        #[arg(long, default_value_t = 20)]
        limit: usize,
    },
    /// Show one build.
    Show {
        /// Build id.
        id: u64,
    },
    /// Print a build's log: the complete log once its latest attempt ended, the live tail while it runs.
    Log {
        /// Build id.
        id: u64,
        /// Only the last this many bytes.
        #[arg(long)]
        tail: Option<u64>,
    },
    /// Cancel a queued or running build.
    Cancel {
        /// Build id.
        id: u64,
    },
}

fn client(server: &str, token: &str) -> anyhow::Result<Client> {
    Ok(Client::new(&[server.to_string()], token)?)
}

fn print<T: Serialize>(output: Output, value: &T, human: impl FnOnce(&T) -> String) -> anyhow::Result<()> {
    match output {
        Output::Json => println!("{}", serde_json::to_string_pretty(value)?),
        Output::Human => println!("{}", human(value)),
    }
    Ok(())
}

/// `cascade node --config FILE`
pub async fn run_node(config: &Path) -> anyhow::Result<ExitCode> {
    let config = cascade_raft_node::NodeConfig::load(config)?;
    cascade_raft_node::server::run(config, cascade_raft_node::server::shutdown_signal()).await?;
    Ok(ExitCode::SUCCESS)
}

/// `cascade cluster …`
pub async fn cluster(server: &str, token: &str, output: Output, cmd: ClusterCommand) -> anyhow::Result<ExitCode> {
    let client = client(server, token)?;
    match cmd {
        ClusterCommand::Init => {
            let answer = client.cluster_init().await.context("cluster init failed")?;
            print(output, &answer, |_| "cluster initialized".to_string())?;
        }
        ClusterCommand::Status => {
            let status = client.cluster_status().await?;
            print(output, &status, |s| {
                let mut out = format!("leader: {:?}  term: {}\n", s.leader, s.term);
                out.push_str(&format!(
                    "{:<4} {:<22} {:<8} {:<8} {:>10} {:>6}\n",
                    "id", "addr", "region", "role", "matched", "lag"
                ));
                for m in &s.members {
                    let matched = m.matched_index.map_or("-".into(), |i| i.to_string());
                    let lag = m.lag.map_or("-".into(), |i| i.to_string());
                    out.push_str(&format!(
                        "{:<4} {:<22} {:<8} {:<8} {:>10} {:>6}\n",
                        m.id, m.addr, m.region, m.role, matched, lag
                    ));
                }
                out.trim_end().to_string()
            })?;
        }
        ClusterCommand::AddLearner(member) => add_member(&client, output, member, false).await?,
        ClusterCommand::AddVoter(member) => add_member(&client, output, member, true).await?,
        ClusterCommand::Backup { out } => backup(&client, output, &out).await?,
        ClusterCommand::Remove { id } => {
            let answer = client.remove_member(id).await?;
            print(output, &answer, |_| format!("node {id} removed; stop its process now"))?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn add_member(client: &Client, output: Output, member: MemberArgs, voter: bool) -> anyhow::Result<()> {
    let MemberArgs { id, addr, region } = member;
    let answer = client.add_member(&AddMemberRequest { id, addr, region, voter }).await?;
    let role = if voter { "voter" } else { "learner" };
    print(output, &answer, |_| format!("node {id} added as {role}"))
}

/// `cascade cluster backup --out FILE`: downloads into `FILE.partial`, verifies it, renames it into place.
async fn backup(client: &Client, output: Output, out: &Path) -> anyhow::Result<()> {
    let name = out.file_name().context("--out must name a file")?.to_string_lossy().into_owned();
    let partial = out.with_file_name(format!(".{name}.partial"));
    let result = async {
        let mut file =
            tokio::fs::File::create(&partial).await.with_context(|| format!("cannot create {}", partial.display()))?;
        client.backup(&mut file).await.context("backup failed")?;
        file.sync_all().await.with_context(|| format!("cannot sync {}", partial.display()))?;
        drop(file);
        let bytes = tokio::fs::read(&partial).await.with_context(|| format!("cannot read {}", partial.display()))?;
        let (_, info) = cascade_raft_node::backup::decode(&bytes).context("the node sent an unusable backup")?;
        tokio::fs::rename(&partial, out).await.with_context(|| format!("cannot rename into {}", out.display()))?;
        let dir = out.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
        if let Ok(dir) = std::fs::File::open(dir) {
            let _ = dir.sync_all();
        }
        anyhow::Ok(info)
    }
    .await;
    let info = match result {
        Ok(info) => info,
        Err(e) => {
            let _ = tokio::fs::remove_file(&partial).await;
            return Err(e);
        }
    };
    print(output, &info, |i| {
        format!(
            "backup written to {}: {} bytes, applied index {} (term {}), {} builds, BLAKE3 {}",
            out.display(),
            i.size,
            i.applied_index,
            i.applied_term,
            i.builds,
            i.checksum
        )
    })
}

/// `cascade node restore --config FILE --from BACKUP`: seeds the config's empty data dir from a backup.
pub async fn restore(config: &Path, from: &Path, output: Output) -> anyhow::Result<ExitCode> {
    let config = cascade_raft_node::NodeConfig::load(config)?;
    let bytes = tokio::fs::read(from).await.with_context(|| format!("cannot read backup {}", from.display()))?;
    let report = cascade_raft_node::backup::restore(&config, &bytes).await?;
    print(output, &report, |r| {
        format!(
            "restored applied index {} (term {}, {} builds) into {}; voters {:?}\n\
             start the node(s) with `cascade node --config FILE`: they elect a leader themselves (no `cluster init`)",
            r.backup.applied_index,
            r.backup.applied_term,
            r.backup.builds,
            r.data_dir.display(),
            r.voters
        )
    })?;
    Ok(ExitCode::SUCCESS)
}

fn job_line(job: &Job) -> String {
    let detail = match &job.status {
        JobStatus::Running { worker, attempt, .. } => format!("on {worker} (attempt {attempt})"),
        JobStatus::Succeeded { artifact } => {
            format!("artifact {} ({} bytes)", artifact.digest, artifact.size)
        }
        JobStatus::Failed { reason } => reason.clone(),
        JobStatus::Cancelled { by } => format!("by {by}"),
        JobStatus::Queued => String::new(),
    };
    format!("{:>6}  {:<10} {:<16} {}  {}", job.id, job.status.name(), job.service, &job.commit.as_str()[..12], detail)
}

/// `cascade build …`
pub async fn build(server: &str, token: &str, output: Output, cmd: BuildCommand) -> anyhow::Result<ExitCode> {
    let client = client(server, token)?;
    match cmd {
        BuildCommand::Submit { repo, commit, service, follow, follow_timeout } => {
            let job = client.submit_build(&SubmitBuildRequest { repo, commit, service }).await?;
            if !follow {
                print(output, &job, job_line)?;
                return Ok(ExitCode::SUCCESS);
            }
            eprintln!("build {} queued; following", job.id);
            let job = crate::follow::build(&client, job.id, Duration::from_secs(follow_timeout)).await?;
            print(output, &job, job_line)?;
            return Ok(exit_for(&job));
        }
        BuildCommand::List { service, status, limit } => {
            let list = client.list_builds(None, limit, service.as_ref(), status.as_deref()).await?;
            print(output, &list, |l| l.builds.iter().map(job_line).collect::<Vec<_>>().join("\n"))?;
        }
        BuildCommand::Show { id } => {
            let detail = client.get_build_detail(JobId(id)).await?;
            print(output, &detail, |d| {
                let mut out = job_line(&d.job);
                for event in &d.job.timeline {
                    out.push_str(&format!("\n    {}  {}", event.at.0, event.what));
                }
                if let Some(record) = &d.artifact_record {
                    out.push_str(&format!("\n  artifact {} ({} bytes)", record.artifact.digest, record.artifact.size));
                    for (region, status) in &record.replication {
                        out.push_str(&format!("\n    {region}: {}", serde_json::to_string(status).unwrap_or_default()));
                    }
                }
                out
            })?;
        }
        BuildCommand::Log { id, tail } => {
            let log = client.build_log(JobId(id), tail).await?;
            match output {
                Output::Json => println!("{}", serde_json::to_string_pretty(&log)?),
                Output::Human => {
                    print!("{}", log.text);
                    if !log.complete {
                        eprintln!("(build {id} attempt {} is still running: this is the live tail)", log.attempt);
                    }
                }
            }
        }
        BuildCommand::Cancel { id } => {
            let job = client.cancel_build(JobId(id)).await?;
            print(output, &job, job_line)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn exit_for(job: &Job) -> ExitCode {
    match &job.status {
        JobStatus::Succeeded { .. } => ExitCode::SUCCESS,
        JobStatus::Failed { reason } => {
            eprintln!("build {} failed: {reason}", job.id);
            ExitCode::FAILURE
        }
        other => {
            eprintln!("build {} ended {}", job.id, other.name());
            ExitCode::FAILURE
        }
    }
}

/// `cascade status`
pub async fn status(server: &str, token: &str, output: Output) -> anyhow::Result<ExitCode> {
    let client = client(server, token)?;
    let cluster = client.cluster_status().await?;
    let summary = serde_json::json!({
        "leader": cluster.leader,
        "term": cluster.term,
        "members": cluster.members.len(),
        "builds_total": cluster.builds_total,
        "queued": cluster.queued,
        "running": cluster.running,
        "workers": cluster.workers.len(),
    });
    print(output, &summary, |s| {
        format!(
            "leader {}  term {}  members {}  builds {}  queued {}  running {}  workers {}",
            s["leader"], s["term"], s["members"], s["builds_total"], s["queued"], s["running"], s["workers"]
        )
    })?;
    Ok(ExitCode::SUCCESS)
}
