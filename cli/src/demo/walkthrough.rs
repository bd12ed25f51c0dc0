//! What the demo does once everything runs: builds each example service's tip, waits until its artifact is
//! in every region's store, and (with `--deploy`) deploys it and follows the rollout until every host that
//! runs the service has it healthy, then asks one of them over HTTP, printing each step as a user would see
//! it in the console.

use anyhow::Context;
use cascade_client::Client;
use cascade_core::api::SubmitBuildRequest;
use cascade_core::state::ReplicationStatus;
use cascade_core::{CommitSha, JobId, JobStatus, Region, RepoUrl, ServiceName};
use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use super::layout::{Layout, Tokens, REGIONS, SERVICES};

const POLL: Duration = Duration::from_millis(500);
const BUILD_LIMIT: Duration = Duration::from_secs(600);
const ROLLOUT_LIMIT: Duration = Duration::from_secs(600);
/// How long the walkthrough keeps asking a healthy host's service for its answer.
const ASK_LIMIT: Duration = Duration::from_secs(10);

/// Builds each example service's commit (`commits[i]` for `SERVICES[i]`), waits for replication, and
/// deploys them if asked.
pub async fn first_build(layout: &Layout, tokens: &Tokens, commits: &[String], deploy: bool) -> anyhow::Result<()> {
    let servers = layout.urls();
    let builder = Client::new(&servers, &tokens.builder)?.with_retry_budget(Duration::from_secs(30));
    let mut builds = Vec::new();
    for (i, commit) in commits.iter().enumerate() {
        let name = SERVICES[i].name;
        let request = SubmitBuildRequest {
            repo: RepoUrl::parse(format!("file://{}", layout.example_repo(i).display()))?,
            commit: CommitSha::parse(commit)?,
            service: ServiceName::parse(name)?,
        };
        // The same key on every run: a second `cascade demo` finds its first build instead of queueing another.
        let job = builder
            .submit_build_with_key(&request, &format!("demo-first-build-{name}-{commit}"))
            .await
            .with_context(|| format!("cannot submit the first build of {name}"))?;
        println!("build {} of {name} ({}) submitted", job.id, &commit[..12]);
        builds.push(job.id);
    }
    for (i, id) in builds.iter().enumerate() {
        wait_built(&builder, *id, SERVICES[i].name).await?;
    }
    if !deploy {
        for (i, id) in builds.iter().enumerate() {
            println!(
                "build {id} of {name} is ready to deploy: press Deploy in the console, or `cascade deploy --service {name} --build {id} --follow`",
                name = SERVICES[i].name
            );
        }
        return Ok(());
    }
    let deployer = Client::new(&servers, &tokens.deployer)?.with_retry_budget(Duration::from_secs(30));
    let mut generations = Vec::new();
    for (i, id) in builds.iter().enumerate() {
        generations.push(deploy_once(&deployer, SERVICES[i].name, *id).await?);
    }
    let mut summary = Vec::new();
    for (i, generation) in generations.iter().enumerate() {
        let name = SERVICES[i].name;
        let hosts = layout.hosts_of(i);
        follow_rollout(&deployer, &ServiceName::parse(name)?, *generation, hosts.len() as u64).await?;
        let (region, host) = hosts[0];
        let logs = layout.host_dir(region, host).join("services").join(name);
        ask(&layout.service_url(region, host), &Layout::host_name(region, host), &logs).await;
        summary.push(format!("{name} on {} hosts", hosts.len()));
    }
    println!("all services healthy: {}", summary.join(", "));
    Ok(())
}

/// Deploys build `id` of `name` unless it is already the desired version; returns the generation.
async fn deploy_once(client: &Client, name: &str, id: JobId) -> anyhow::Result<u64> {
    let service = ServiceName::parse(name)?;
    let current = match client.deployment(&service).await {
        Ok(status) => status.desired,
        Err(e) if e.status() == Some(reqwest::StatusCode::NOT_FOUND) => None,
        Err(e) => return Err(e.into()),
    };
    match current {
        Some(desired) if desired.build == id => {
            println!("build {id} of {name} is already deployed (generation {})", desired.generation);
            Ok(desired.generation)
        }
        _ => {
            let desired = client
                .deploy(&service, id)
                .await
                .with_context(|| format!("cannot deploy the first build of {name}"))?;
            println!("deployed build {id} of {name} as generation {}", desired.generation);
            Ok(desired.generation)
        }
    }
}

/// Prints the build's status changes, then each region as its store receives the artifact.
async fn wait_built(client: &Client, id: JobId, name: &str) -> anyhow::Result<()> {
    let started = Instant::now();
    let mut last_status = String::new();
    let mut replicated = BTreeSet::new();
    loop {
        anyhow::ensure!(started.elapsed() < BUILD_LIMIT, "build {id} of {name} not done after {BUILD_LIMIT:?}");
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
            println!("build {id} of {name}: {status}{extra} ({:.1} s)", started.elapsed().as_secs_f64());
            last_status = status;
        }
        match &detail.job.status {
            JobStatus::Failed { .. } | JobStatus::Cancelled { .. } => {
                anyhow::bail!("build {id} of {name} did not succeed; `cascade build log {id}` shows why")
            }
            JobStatus::Succeeded { .. } => {
                if let Some(record) = &detail.artifact_record {
                    for region in REGIONS {
                        let key = Region::parse(region)?;
                        if record.replication.get(&key) == Some(&ReplicationStatus::Replicated)
                            && replicated.insert(region)
                        {
                            println!(
                                "build {id} of {name}: artifact replicated to {region} ({}/{}, {:.1} s)",
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

/// Prints the rollout's counts as they change (and each failed host's reason once) until all `hosts` that
/// run `service` have `generation` healthy; fails once every host has either succeeded or failed.
async fn follow_rollout(client: &Client, service: &ServiceName, generation: u64, hosts: u64) -> anyhow::Result<()> {
    let started = Instant::now();
    let mut last = (u64::MAX, u64::MAX);
    let mut reported = BTreeSet::new();
    loop {
        anyhow::ensure!(
            started.elapsed() < ROLLOUT_LIMIT,
            "rollout of {service} generation {generation} not done in time; `cascade status --service {service}` shows where it is"
        );
        let status = client.deployment(service).await?;
        let current = status.desired.as_ref().map(|d| d.generation);
        anyhow::ensure!(
            current == Some(generation),
            "another deploy of {service} (generation {current:?}) replaced generation {generation}; follow it in the console"
        );
        let (mut active, mut total, mut failed) = (0, 0, 0);
        for clusters in status.rollout.values() {
            for cluster in clusters.values() {
                active += cluster.counts.active;
                total += cluster.counts.total;
                failed += cluster.counts.failed;
                for failure in &cluster.failures.hosts {
                    if reported.insert(failure.host.clone()) {
                        println!("rollout of {service}: {} failed: {}", failure.host, failure.reason);
                    }
                }
            }
        }
        if (active, total) != last {
            println!("rollout of {service}: {active}/{hosts} hosts healthy ({:.1} s)", started.elapsed().as_secs_f64());
            last = (active, total);
        }
        if active == hosts && total == hosts {
            println!("rollout complete: {service} generation {generation} is healthy on all {hosts} hosts that run it");
            return Ok(());
        }
        anyhow::ensure!(
            failed == 0 || active + failed < hosts,
            "rollout of {service} generation {generation}: {failed} of {hosts} hosts failed (back on their previous release); `cascade status --service {service}` shows why"
        );
        tokio::time::sleep(POLL).await;
    }
}

/// Asks one host's service for its `GET /` answer, as `curl` would, and prints it.
async fn ask(url: &str, host: &str, logs: &std::path::Path) {
    println!("  ask one ({host}):  curl {url}");
    let http = match reqwest::Client::builder().no_proxy().timeout(Duration::from_secs(2)).build() {
        Ok(http) => http,
        Err(e) => return println!("  (cannot make an HTTP client: {e})"),
    };
    let started = Instant::now();
    let last_error = loop {
        let error = match http.get(url).send().await {
            Ok(response) if response.status().is_success() => {
                let body = response.text().await.unwrap_or_default();
                return println!("  {}", body.trim_end());
            }
            Ok(response) => format!("it answered {}", response.status()),
            Err(e) => e.to_string(),
        };
        if started.elapsed() > ASK_LIMIT {
            break error;
        }
        tokio::time::sleep(POLL).await;
    };
    println!("  (no answer from {url}: {last_error}; see activate.log and run/ in {})", logs.display());
}
