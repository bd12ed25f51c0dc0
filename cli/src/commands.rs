//! What each subcommand does; printing is the only logic that lives here.

use crate::Output;
use anyhow::Context;
use cascade_client::Client;
use cascade_core::api::{AddMemberRequest, SubmitBuildRequest};
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

/// `cascade deploy` (with a build) and `cascade rollback` (without).
pub async fn deploy(
    server: &str,
    token: &str,
    output: Output,
    service: ServiceName,
    build: Option<u64>,
) -> anyhow::Result<ExitCode> {
    let client = client(server, token)?;
    let desired = match build {
        Some(build) => client.deploy(&service, JobId(build)).await?,
        None => client.rollback(&service).await?,
    };
    print(output, &desired, |d| {
        format!("{} generation {}: build {} ({})", d.service, d.generation, d.build, d.artifact.digest)
    })?;
    Ok(ExitCode::SUCCESS)
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
    }
    Ok(ExitCode::SUCCESS)
}

async fn add_member(client: &Client, output: Output, member: MemberArgs, voter: bool) -> anyhow::Result<()> {
    let MemberArgs { id, addr, region } = member;
    let answer = client.add_member(&AddMemberRequest { id, addr, region, voter }).await?;
    let role = if voter { "voter" } else { "learner" };
    print(output, &answer, |_| format!("node {id} added as {role}"))
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
            let job = follow_build(&client, job.id, Duration::from_secs(follow_timeout)).await?;
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

/// Polls a build until it reaches a final status, for at most `limit`.
async fn follow_build(client: &Client, id: JobId, limit: Duration) -> anyhow::Result<Job> {
    let started = std::time::Instant::now();
    let mut last = String::new();
    loop {
        anyhow::ensure!(
            started.elapsed() < limit,
            "build {id} is still {last} after {limit:?}; it goes on: `cascade build show {id}` to check on it"
        );
        let job = client.get_build(id).await?;
        if job.status.name() != last {
            last = job.status.name().to_string();
            eprintln!("build {id}: {last}");
        }
        if job.status.is_terminal() {
            return Ok(job);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
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
