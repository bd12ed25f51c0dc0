//! `--follow` for builds and rollouts: a progress bar on a terminal (indicatif draws nothing when stderr is
//! not one), a line per change otherwise, and an exit code a script can branch on.

use cascade_client::Client;
use cascade_core::api::DeploymentStatus;
use cascade_core::rollout::RolloutEnd;
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

/// Milliseconds since the Unix epoch on this machine (for bake countdowns only; the gate uses the
/// leader's clock).
pub fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// How a followed rollout ended: the end the control plane recorded, with the host totals then.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FollowedEnd {
    /// The recorded end.
    pub end: RolloutEnd,
    /// Hosts at the end.
    pub totals: Totals,
    /// The generation a roll back or a newer deploy made, if any.
    pub next_generation: Option<u64>,
}

/// Follows the rollout of `generation` until the control plane records its end (complete, failed,
/// rolled back, aborted or superseded: every rollout ends, at the latest at its progress deadline); a line
/// (or the progress bar) shows each change of stage and counts.
pub async fn rollout(
    client: &Client,
    service: &ServiceName,
    generation: u64,
    limit: Duration,
) -> anyhow::Result<FollowedEnd> {
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
                "rollout of {service} generation {generation} has not ended after {limit:?}; it goes on: `cascade status --service {service}`"
            );
        }
        let status = client.deployment(service).await?;
        let Some(current) = status.desired.as_ref() else {
            anyhow::bail!("{service} has no deployment");
        };
        let next_generation = (current.generation != generation).then_some(current.generation);
        let Some(desired) = std::iter::once(current).chain(&status.history).find(|d| d.generation == generation) else {
            anyhow::bail!("{service} generation {generation} is no longer in the deploy history");
        };
        let now = if next_generation.is_none() {
            totals(&status)
        } else {
            last.as_ref().map_or_else(Totals::default, |(t, _)| *t)
        };
        if let Some(end) = &desired.progress.end {
            bar.abandon();
            return Ok(FollowedEnd { end: end.clone(), totals: now, next_generation });
        }
        let stage = cascade_core::rollout::describe_stage(
            &desired.policy,
            &desired.progress,
            desired.control,
            cascade_core::UnixMillis(now_ms()),
        );
        // The bake countdown changes every second; a line per change of stage without it is enough.
        let stage_key = stage.split(", baking").next().unwrap_or_default().to_string();
        if last.as_ref() != Some(&(now, stage_key.clone())) {
            bar.set_length(now.total);
            bar.set_position(now.active);
            let failed = if now.failed > 0 { format!(", {} failed", now.failed) } else { String::new() };
            if interactive() {
                bar.set_message(format!("{stage}{failed}"));
            } else {
                // Before any cluster reported there are no hosts to count, only the stage to say.
                let counts = match now.total {
                    0 => String::new(),
                    total => format!("{}/{total} hosts active{failed}; ", now.active),
                };
                eprintln!("{service} generation {generation}: {counts}{stage}");
            }
            last = Some((now, stage_key));
        } else if interactive() {
            bar.set_message(stage);
        }
        tokio::time::sleep(POLL).await;
    }
}
