//! `--follow` for builds and rollouts: a progress bar on a terminal (indicatif draws nothing when stderr is
//! not one), a line per change otherwise, and an exit code a script can branch on.

use cascade_client::Client;
use cascade_core::api::DeploymentStatus;
use cascade_core::state::RolloutControl;
use cascade_core::{Job, JobId, JobStatus, ServiceName};
use indicatif::{ProgressBar, ProgressStyle};
use std::io::IsTerminal as _;
use std::time::{Duration, Instant};

const POLL: Duration = Duration::from_millis(500);

fn interactive() -> bool {
    std::io::stderr().is_terminal()
}

/// Polls a build until it reaches a final status, for at most `limit`; a spinner shows its status.
pub async fn build(client: &Client, id: JobId, limit: Duration) -> anyhow::Result<Job> {
    let started = Instant::now();
    let spinner = ProgressBar::new_spinner();
    spinner.set_style(ProgressStyle::with_template("{spinner} build {prefix}: {msg} [{elapsed}]")?);
    spinner.set_prefix(id.to_string());
    spinner.enable_steady_tick(Duration::from_millis(120));
    let mut last = String::new();
    loop {
        if started.elapsed() >= limit {
            spinner.abandon();
            anyhow::bail!(
                "build {id} is still {last} after {limit:?}; it goes on: `cascade build show {id}` to check on it"
            );
        }
        let job = client.get_build(id).await?;
        let name = job.status.name().to_string();
        if name != last {
            let message = match &job.status {
                JobStatus::Running { worker, attempt, .. } => format!("running on {worker} (attempt {attempt})"),
                other => other.name().to_string(),
            };
            if interactive() {
                spinner.set_message(message);
            } else {
                eprintln!("build {id}: {message}");
            }
            last = name;
        }
        if job.status.is_terminal() {
            spinner.finish_and_clear();
            return Ok(job);
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Hosts in the current generation's rollout, summed over regions and clusters.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Totals {
    /// Hosts the managers know of.
    pub total: u64,
    /// Running the desired version.
    pub active: u64,
    /// Failed to fetch, verify or activate.
    pub failed: u64,
}

/// Sums the rollout counts of a deployment.
pub fn totals(status: &DeploymentStatus) -> Totals {
    let mut totals = Totals::default();
    for cluster in status.rollout.values().flat_map(|clusters| clusters.values()) {
        totals.total += cluster.counts.total;
        totals.active += cluster.counts.active;
        totals.failed += cluster.counts.failed;
    }
    totals
}

/// How a followed rollout ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RolloutEnd {
    /// Every reported host runs the generation.
    Complete(Totals),
    /// Some hosts failed and every other one is active.
    HostsFailed(Totals),
    /// Every region reported, and no host in any cluster runs the service with this placement.
    NoTargetedHosts,
    /// Someone aborted it.
    Aborted,
    /// A newer deploy replaced it.
    Superseded(u64),
}

/// Follows the rollout of `generation` until every host reports it active, some failed, or it was
/// aborted or replaced; a progress bar counts active hosts.
pub async fn rollout(
    client: &Client,
    service: &ServiceName,
    generation: u64,
    limit: Duration,
) -> anyhow::Result<RolloutEnd> {
    let started = Instant::now();
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} hosts active {msg} [{elapsed}]")?
            .progress_chars("=> "),
    );
    bar.set_prefix(format!("{service} generation {generation}"));
    let mut last = None;
    loop {
        if started.elapsed() >= limit {
            bar.abandon();
            anyhow::bail!(
                "rollout of {service} generation {generation} not complete after {limit:?}; it goes on: `cascade status --service {service}`"
            );
        }
        let status = client.deployment(service).await?;
        let Some(desired) = status.desired.as_ref() else {
            anyhow::bail!("{service} has no deployment");
        };
        if desired.generation != generation {
            bar.abandon();
            return Ok(RolloutEnd::Superseded(desired.generation));
        }
        if desired.control == RolloutControl::Aborted {
            bar.abandon_with_message("aborted");
            return Ok(RolloutEnd::Aborted);
        }
        let now = totals(&status);
        let paused = desired.control == RolloutControl::Paused;
        if last != Some((now, paused)) {
            bar.set_length(now.total);
            bar.set_position(now.active);
            let message = match (paused, now.failed) {
                (true, _) => "(paused)".to_string(),
                (false, 0) => String::new(),
                (false, failed) => format!("({failed} failed)"),
            };
            if interactive() {
                bar.set_message(message);
            } else {
                eprintln!("{service} generation {generation}: {}/{} hosts active {message}", now.active, now.total);
            }
            last = Some((now, paused));
        }
        // Every region with a store must have reported: one region's hosts being done is not the rollout done.
        let all_reported = status.replication.keys().all(|region| status.rollout.contains_key(region));
        if all_reported && now.total > 0 && now.active == now.total {
            bar.finish();
            return Ok(RolloutEnd::Complete(now));
        }
        if all_reported && !status.rollout.is_empty() && now.total == 0 {
            bar.abandon();
            return Ok(RolloutEnd::NoTargetedHosts);
        }
        if now.total > 0 && now.failed > 0 && now.active + now.failed == now.total {
            bar.abandon();
            return Ok(RolloutEnd::HostsFailed(now));
        }
        tokio::time::sleep(POLL).await;
    }
}
