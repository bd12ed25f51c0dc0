//! What the demo does once everything runs: builds the example repository's tip, waits until the artifact
//! is in every region's store, and (with `--deploy`) deploys it and follows the rollout to 100 %, printing
//! each step as a user would see it in the console.

use anyhow::Context;
use cascade_client::Client;
use cascade_core::api::SubmitBuildRequest;
use cascade_core::state::ReplicationStatus;
use cascade_core::{CommitSha, JobId, JobStatus, Region, RepoUrl, ServiceName};
use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use super::layout::{Layout, Tokens, REGIONS, SERVICE};

const POLL: Duration = Duration::from_millis(500);
const BUILD_LIMIT: Duration = Duration::from_secs(600);
const ROLLOUT_LIMIT: Duration = Duration::from_secs(600);

/// Builds the example's `commit`, waits for replication, and deploys it if asked.
pub async fn first_build(layout: &Layout, tokens: &Tokens, commit: &str, deploy: bool) -> anyhow::Result<()> {
    let servers = layout.urls();
    let builder = Client::new(&servers, &tokens.builder)?.with_retry_budget(Duration::from_secs(30));
    let service = ServiceName::parse(SERVICE)?;
    let request = SubmitBuildRequest {
        repo: RepoUrl::parse(format!("file://{}", layout.example_repo().display()))?,
        commit: CommitSha::parse(commit)?,
        service: service.clone(),
    };
    // The same key on every run: a second `cascade demo` finds its first build instead of queueing another.
    let job = builder
        .submit_build_with_key(&request, &format!("demo-first-build-{commit}"))
        .await
        .context("cannot submit the first build")?;
    println!("build {} of {} ({}) submitted", job.id, SERVICE, &commit[..12]);
    wait_built(&builder, job.id).await?;
    if !deploy {
        println!(
            "build {} is ready to deploy: press Deploy in the console, or `cascade deploy --service {SERVICE} --build {} --follow`",
            job.id, job.id
        );
        return Ok(());
    }
    let deployer = Client::new(&servers, &tokens.deployer)?.with_retry_budget(Duration::from_secs(30));
    let current = match deployer.deployment(&service).await {
        Ok(status) => status.desired,
        Err(e) if e.status() == Some(reqwest::StatusCode::NOT_FOUND) => None,
        Err(e) => return Err(e.into()),
    };
    let desired = match current {
        Some(desired) if desired.build == job.id => {
            println!("build {} is already deployed (generation {})", job.id, desired.generation);
            desired
        }
        _ => {
            let desired = deployer.deploy(&service, job.id).await.context("cannot deploy the first build")?;
            println!("deployed build {} as generation {}", job.id, desired.generation);
            desired
        }
    };
    follow_rollout(&deployer, &service, desired.generation, REGIONS.len() as u64 * layout.hosts_per_region as u64).await
}

/// Prints the build's status changes, then each region as its store receives the artifact.
async fn wait_built(client: &Client, id: JobId) -> anyhow::Result<()> {
    let started = Instant::now();
    let mut last_status = String::new();
    let mut replicated = BTreeSet::new();
    loop {
        anyhow::ensure!(started.elapsed() < BUILD_LIMIT, "build {id} not done after {BUILD_LIMIT:?}");
        let detail = client.get_build_detail(id).await?;
        let status = detail.job.status.name().to_string();
        if status != last_status {
            let extra = match &detail.job.status {
                JobStatus::Running { worker, .. } => format!(" on {worker}"),
                JobStatus::Succeeded { artifact } => {
                    format!(": artifact {} ({} bytes)", artifact.digest, artifact.size)
                }
                JobStatus::Failed { reason } => format!(": {reason}"),
                _ => String::new(),
            };
            println!("build {id}: {status}{extra} ({:.1} s)", started.elapsed().as_secs_f64());
            last_status = status;
        }
        match &detail.job.status {
            JobStatus::Failed { .. } | JobStatus::Cancelled { .. } => {
                anyhow::bail!("build {id} did not succeed; `cascade build log {id}` shows why")
            }
            JobStatus::Succeeded { .. } => {
                if let Some(record) = &detail.artifact_record {
                    for region in REGIONS {
                        let key = Region::parse(region)?;
                        if record.replication.get(&key) == Some(&ReplicationStatus::Replicated)
                            && replicated.insert(region)
                        {
                            println!(
                                "build {id}: artifact replicated to {region} ({}/{}, {:.1} s)",
                                replicated.len(),
                                REGIONS.len(),
                                started.elapsed().as_secs_f64()
                            );
                        }
                    }
                }
                if replicated.len() == REGIONS.len() {
                    return Ok(());
                }
            }
            _ => {}
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Prints the rollout's counts as they change until every host runs `generation`.
async fn follow_rollout(client: &Client, service: &ServiceName, generation: u64, hosts: u64) -> anyhow::Result<()> {
    let started = Instant::now();
    let mut last = (u64::MAX, u64::MAX);
    loop {
        anyhow::ensure!(started.elapsed() < ROLLOUT_LIMIT, "rollout of generation {generation} not done in time");
        let status = client.deployment(service).await?;
        let current = status.desired.as_ref().map(|d| d.generation);
        anyhow::ensure!(
            current == Some(generation),
            "another deploy (generation {current:?}) replaced generation {generation}; follow it in the console"
        );
        let (mut active, mut total) = (0, 0);
        for clusters in status.rollout.values() {
            for cluster in clusters.values() {
                active += cluster.counts.active;
                total += cluster.counts.total;
            }
        }
        if (active, total) != last {
            println!("rollout: {active}/{hosts} hosts active ({:.1} s)", started.elapsed().as_secs_f64());
            last = (active, total);
        }
        if active == hosts && total == hosts {
            println!("rollout complete: every host runs generation {generation}");
            return Ok(());
        }
        tokio::time::sleep(POLL).await;
    }
}
