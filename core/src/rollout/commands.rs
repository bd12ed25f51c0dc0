//! The state machine's deploy commands: set a desired version (with its effective policy), roll back,
//! pause / resume / abort, promote, record a manager's report, and step a rollout through its gate.
//!
//! Every check precedes the first mutation, as everywhere in [`State::apply`].

use super::{
    ClusterSnapshot, EndState, Gate, RolloutEnd, RolloutOverride, RolloutPolicy, RolloutProgress, RolloutStep,
};
use crate::api::RolloutReport;
use crate::command::{CommandError, CommandOutput, CommandResult};
use crate::ids::{JobId, Principal, Region, ServiceName, UnixMillis};
use crate::job::JobStatus;
use crate::state::{ClusterRollout, DesiredVersion, RolloutControl, State, MAX_DEPLOY_HISTORY};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;

/// Why a desired version was set.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeployOrigin {
    /// A deployer deployed a build.
    #[default]
    Deploy,
    /// A deployer pressed Roll back while generation `of` was current.
    Rollback {
        /// The generation rolled back.
        of: u64,
    },
    /// Generation `of` went over its failure budget with `on_failure = "rollback"`.
    AutoRollback {
        /// The generation rolled back.
        of: u64,
    },
}

impl State {
    /// The clusters expected to report for `service`'s `generation`, in (region, cluster) order: every
    /// cluster whose manager held a lease within [`super::CLUSTER_FORGOTTEN_AFTER_MS`], and every cluster
    /// that reported.
    pub fn rollout_clusters(
        &self,
        service: &ServiceName,
        generation: u64,
        now: UnixMillis,
    ) -> Vec<ClusterSnapshot<'_>> {
        let reports = self.rollouts.get(&(service.clone(), generation));
        let mut keys: BTreeSet<(&Region, &crate::ClusterName)> = BTreeSet::new();
        for (region, clusters) in &self.manager_leases {
            for (cluster, lease) in clusters {
                if now.saturating_since(lease.expires_at) < super::CLUSTER_FORGOTTEN_AFTER_MS {
                    keys.insert((region, cluster));
                }
            }
        }
        if let Some(reports) = reports {
            keys.extend(reports.keys().map(|(r, c)| (r, c)));
        }
        keys.into_iter()
            .map(|(region, cluster)| ClusterSnapshot {
                region,
                cluster,
                report: reports.and_then(|r| r.get(&(region.clone(), cluster.clone()))),
            })
            .collect()
    }

    /// The step the gate would take for `service`'s current rollout at `now` (what the leader's controller
    /// asks before it proposes `StepRollout`).
    pub fn rollout_decision(&self, service: &ServiceName, now: UnixMillis) -> Option<RolloutStep> {
        let desired = self.desired.get(service)?;
        let clusters = self.rollout_clusters(service, desired.generation, now);
        super::decide(&gate(desired, &clusters), now)
    }

    /// Services whose current rollout has not ended.
    pub fn unfinished_rollouts(&self) -> impl Iterator<Item = &ServiceName> {
        self.desired.iter().filter(|(_, d)| d.progress.end.is_none()).map(|(s, _)| s)
    }

    /// Changes the current desired version of `service` and its deploy history entry alike.
    fn update_desired(
        &mut self,
        service: &ServiceName,
        change: impl Fn(&mut DesiredVersion),
    ) -> Option<DesiredVersion> {
        let desired = self.desired.get_mut(service)?;
        change(desired);
        let desired = desired.clone();
        if let Some(entry) = self
            .deploy_history
            .get_mut(service)
            .and_then(|h| h.last_mut())
            .filter(|e| e.generation == desired.generation)
        {
            change(entry);
        }
        Some(desired)
    }

    fn end_rollout(&mut self, now: UnixMillis, actor: &Principal, service: &ServiceName, end: RolloutEnd) {
        let detail = format!("{service}: {} ({})", end.state.name(), end.reason);
        let action = match end.state {
            EndState::Complete => "complete_rollout",
            EndState::Failed => "halt_rollout",
            EndState::RolledBack => "rollback_rollout",
            EndState::Aborted => "abort_rollout",
            EndState::Superseded => "supersede_rollout",
        };
        if let Some(desired) = self.update_desired(service, |d| d.progress.end = Some(end.clone())) {
            self.audit(now, actor, action, format!("generation {}: {detail}", desired.generation));
        }
    }

    /// `SetDesiredVersion`: a new generation of `service` running `build` under the build's policy with
    /// `overrides` applied; the rollout it replaces, if unfinished, ends superseded.
    pub(crate) fn set_desired(
        &mut self,
        now: UnixMillis,
        actor: &Principal,
        service: &ServiceName,
        build: JobId,
        overrides: Option<&RolloutOverride>,
        origin: DeployOrigin,
    ) -> CommandResult {
        let job = self.jobs.get(&build).ok_or(CommandError::UnknownJob(build))?;
        let JobStatus::Succeeded { artifact } = &job.status else {
            return Err(CommandError::NotDeployable { job: build, status: job.status.name().into() });
        };
        if &job.service != service {
            return Err(CommandError::ServiceMismatch {
                job: build,
                requested: service.clone(),
                actual: job.service.clone(),
            });
        }
        let artifact = artifact.clone();
        let policy = match (origin, overrides) {
            (DeployOrigin::Deploy, None) => artifact.deploy.rollout.clone(),
            (DeployOrigin::Deploy, Some(o)) => o.apply_to(&artifact.deploy.rollout).map_err(CommandError::Invalid)?,
            (_, _) => {
                let current = self.desired.get(service).map(|d| d.policy.clone()).unwrap_or_default();
                RolloutPolicy::rollback_of(&current)
            }
        };
        self.check_policy_fits_fleet(&policy, &artifact.digest)?;
        let generation = self.desired.get(service).map_or(0, |d| d.generation) + 1;
        if let Some(current) = self.desired.get(service).filter(|d| d.progress.end.is_none()) {
            let (state, reason) = match origin {
                DeployOrigin::Rollback { .. } => {
                    (EndState::RolledBack, format!("{actor} rolled back to build {build} (generation {generation})"))
                }
                _ => (EndState::Superseded, format!("{actor} deployed build {build} as generation {generation}")),
            };
            let _ = current;
            self.end_rollout(now, actor, service, RolloutEnd { state, at: now, reason, hosts: Vec::new() });
        }
        let desired = DesiredVersion {
            service: service.clone(),
            build,
            artifact,
            generation,
            set_by: actor.clone(),
            set_at: now,
            control: RolloutControl::Running,
            policy,
            progress: RolloutProgress::new(now),
            origin,
        };
        self.desired.insert(service.clone(), desired.clone());
        let history = self.deploy_history.entry(service.clone()).or_default();
        if history.len() >= MAX_DEPLOY_HISTORY {
            history.remove(0);
        }
        history.push(desired.clone());
        let how = match origin {
            DeployOrigin::Deploy => String::new(),
            DeployOrigin::Rollback { of } => format!(" (roll back of generation {of})"),
            DeployOrigin::AutoRollback { of } => format!(" (automatic roll back of generation {of})"),
        };
        let waves: Vec<String> = desired.policy.waves.iter().map(super::Wave::describe).collect();
        self.audit(
            now,
            actor,
            "set_desired_version",
            format!("{service} generation {generation}: build {build}{how}; waves [{}]", waves.join(", ")),
        );
        Ok(CommandOutput::Desired(desired))
    }

    /// A wave may only name a region the artifact is replicated to (or a manager serves) and a cluster
    /// whose manager is known: a policy that cannot work is refused now, not halfway through.
    fn check_policy_fits_fleet(&self, policy: &RolloutPolicy, digest: &crate::Digest) -> Result<(), CommandError> {
        let mut regions: BTreeSet<&Region> = self.manager_leases.keys().collect();
        if let Some(record) = self.artifacts.get(digest) {
            regions.extend(record.replication.keys());
        }
        for (index, wave) in policy.waves.iter().enumerate() {
            let field = format!("rollout.waves[{index}]");
            if let Some(region) = &wave.region {
                if !regions.contains(region) {
                    let known: Vec<&str> = regions.iter().map(|r| r.as_str()).collect();
                    return Err(CommandError::Invalid(crate::InvalidValue::new(
                        &format!("{field}.region"),
                        format!("no region {region} is known (known regions: {})", known.join(", ")),
                    )));
                }
                if let Some(cluster) = &wave.cluster {
                    let known = self.manager_leases.get(region);
                    if !known.is_some_and(|k| k.contains_key(cluster)) {
                        let names: Vec<&str> =
                            known.map(|k| k.keys().map(|c| c.as_str()).collect()).unwrap_or_default();
                        return Err(CommandError::Invalid(crate::InvalidValue::new(
                            &format!("{field}.cluster"),
                            format!("no cluster {cluster} in region {region} (known: {})", names.join(", ")),
                        )));
                    }
                }
            }
        }
        Ok(())
    }

    /// `Rollback`: deploys the previous good build again, every host at once.
    pub(crate) fn rollback(&mut self, now: UnixMillis, actor: &Principal, service: &ServiceName) -> CommandResult {
        let (build, of) =
            self.rollback_target(service).ok_or_else(|| CommandError::NothingToRollBack(service.clone()))?;
        self.set_desired(now, actor, service, build, None, DeployOrigin::Rollback { of })
    }

    /// What `Rollback` (and an automatic roll back) deploys, and the generation it rolls back: the latest
    /// build other than the current one whose rollout completed; failing that, the latest other build
    /// whose rollout neither failed nor was rolled back. So a roll back never returns to a build that was
    /// itself stopped for failing (after an automatic roll back of #2 to #1, "Roll back" offers #0, not #2).
    pub fn rollback_target(&self, service: &ServiceName) -> Option<(JobId, u64)> {
        let current = self.desired.get(service)?;
        let previous = last_known_good(self.deploy_history.get(service)?, current.build)?;
        Some((previous.build, current.generation))
    }

    /// `ControlRollout`: pause, resume or abort the current generation's rollout.
    pub(crate) fn control_rollout(
        &mut self,
        now: UnixMillis,
        actor: &Principal,
        service: &ServiceName,
        generation: u64,
        control: RolloutControl,
    ) -> CommandResult {
        let desired = self.current_unended(service, generation)?;
        if desired.control == control {
            return Ok(CommandOutput::Desired(desired.clone()));
        }
        let desired = self
            .update_desired(service, |d| {
                d.control = control;
                if control == RolloutControl::Running {
                    // A pause is not a lack of progress: the deadline counts from the resume.
                    d.progress.last_progress_at = now;
                }
            })
            .ok_or_else(|| refuse(service, generation, "the service was never deployed"))?;
        self.audit(now, actor, "control_rollout", format!("{service} generation {generation}: {control:?}"));
        if control == RolloutControl::Aborted {
            let reason = format!("aborted by {actor}; hosts keep the release they run");
            self.end_rollout(
                now,
                actor,
                service,
                RolloutEnd { state: EndState::Aborted, at: now, reason, hosts: vec![] },
            );
            return Ok(CommandOutput::Desired(self.desired.get(service).cloned().unwrap_or(desired)));
        }
        Ok(CommandOutput::Desired(desired))
    }

    fn current_unended(&self, service: &ServiceName, generation: u64) -> Result<&DesiredVersion, CommandError> {
        let desired =
            self.desired.get(service).ok_or_else(|| refuse(service, generation, "the service was never deployed"))?;
        if desired.generation != generation {
            return Err(refuse(
                service,
                generation,
                &format!("only the current generation {} can be controlled", desired.generation),
            ));
        }
        if let Some(end) = &desired.progress.end {
            return Err(refuse(
                service,
                generation,
                &format!("it ended ({}: {}); deploy again to start a new rollout", end.state.name(), end.reason),
            ));
        }
        Ok(desired)
    }

    /// `PromoteRollout`: opens the manual wave the rollout waits at.
    pub(crate) fn promote_rollout(
        &mut self,
        now: UnixMillis,
        actor: &Principal,
        service: &ServiceName,
        generation: u64,
    ) -> CommandResult {
        let desired = self.current_unended(service, generation)?;
        if !desired.progress.awaiting_approval {
            let at = desired.progress.opened.len();
            return Err(refuse(
                service,
                generation,
                &format!(
                    "nothing to promote: wave {} of {} is not waiting for approval (only a manual wave waits)",
                    at.max(1),
                    desired.policy.waves.len()
                ),
            ));
        }
        let clusters = self.rollout_clusters(service, generation, now);
        let gate = gate(desired, &clusters);
        let step = super::open(&gate, desired.progress.opened.len());
        let mut progress = desired.progress.clone();
        super::apply(&gate, &mut progress, &step, now);
        let desired = self.update_desired(service, |d| d.progress = progress.clone());
        self.audit(
            now,
            actor,
            "promote_rollout",
            format!("{service} generation {generation}: wave {} opened", progress.opened.len()),
        );
        Ok(CommandOutput::Desired(
            desired.ok_or_else(|| refuse(service, generation, "the service was never deployed"))?,
        ))
    }

    /// `StepRollout`: takes the step the gate finds in the committed state now, if any.
    pub(crate) fn step_rollout(
        &mut self,
        now: UnixMillis,
        actor: &Principal,
        service: &ServiceName,
        generation: u64,
    ) -> CommandResult {
        let desired = self.current_unended(service, generation)?;
        let clusters = self.rollout_clusters(service, generation, now);
        let gate = gate(desired, &clusters);
        let step = super::decide(&gate, now).ok_or_else(|| refuse(service, generation, "nothing to do yet"))?;
        let mut progress = desired.progress.clone();
        super::apply(&gate, &mut progress, &step, now);
        let end = progress.end.clone();
        let detail = match &step {
            RolloutStep::OpenWave { wave, .. } => format!("wave {} opened", wave + 1),
            RolloutStep::StartBake { wave } => format!("wave {} healthy, baking", wave + 1),
            RolloutStep::AwaitApproval { wave } => format!("wave {} waits for Promote", wave + 1),
            _ => String::new(),
        };
        let rollback = matches!(step, RolloutStep::RollBack { .. }).then(|| self.rollback_target(service)).flatten();
        self.update_desired(service, |d| {
            d.progress = progress.clone();
            d.progress.end = None;
        });
        match end {
            None => self.audit(now, actor, step.name(), format!("{service} generation {generation}: {detail}")),
            Some(mut end) => {
                if matches!(step, RolloutStep::RollBack { .. }) && rollback.is_none() {
                    end.state = EndState::Failed;
                    end.reason.push_str("; no earlier build to roll back to, so it halts");
                }
                self.end_rollout(now, actor, service, end);
            }
        }
        if let Some((build, of)) = rollback {
            return self.set_desired(now, actor, service, build, None, DeployOrigin::AutoRollback { of });
        }
        let desired = self.desired.get(service).cloned();
        Ok(CommandOutput::Desired(
            desired.ok_or_else(|| refuse(service, generation, "the service was never deployed"))?,
        ))
    }

    /// `ReportRollout`: a manager's counts for one cluster; growth of any host's progress resets the
    /// current wave's progress deadline.
    pub(crate) fn report_rollout(&mut self, now: UnixMillis, report: &RolloutReport) -> CommandResult {
        let RolloutReport { service, generation, region, cluster, counts, failures, holder, pending } = report;
        let latest = self.desired.get(service).map_or(0, |d| d.generation);
        if *generation == 0 || *generation > latest {
            return Err(CommandError::UnknownGeneration { service: service.clone(), generation: *generation, latest });
        }
        self.check_report_holder(now, region, cluster, holder.as_deref())?;
        let parts = [counts.fetching, counts.verified, counts.activating, counts.active, counts.failed];
        let sum = parts.iter().try_fold(0u64, |acc, n| acc.checked_add(*n));
        if sum.is_none_or(|s| s > counts.total) {
            return Err(CommandError::InvalidCounts(format!(
                "fetching + verified + activating + active + failed must not exceed total ({counts:?})"
            )));
        }
        failures.validate().map_err(|e| CommandError::InvalidCounts(e.to_string()))?;
        if failures.total() > counts.failed {
            return Err(CommandError::InvalidCounts(format!(
                "{} failed hosts listed or counted, but only {} failed",
                failures.total(),
                counts.failed
            )));
        }
        if pending.len() > crate::deploy::MAX_REPORTED_FAILURES || pending.iter().any(|h| h.len() > 256) {
            return Err(CommandError::InvalidCounts(format!(
                "at most {} pending hosts of at most 256 bytes each",
                crate::deploy::MAX_REPORTED_FAILURES
            )));
        }
        if counts.admitted_offline > counts.offline {
            return Err(CommandError::InvalidCounts(format!("admitted_offline must not exceed offline ({counts:?})")));
        }
        let key = (region.clone(), cluster.clone());
        let moved = |c: &crate::state::RolloutCounts| c.verified + c.activating + c.active + c.failed;
        let before = self.rollouts.get(&(service.clone(), *generation)).and_then(|r| r.get(&key));
        let previous = before.map(|r| moved(&r.counts));
        // A manager that took over knows only the hosts that reconnected to it so far: the cluster keeps the
        // largest size any report of this generation gave, so a wave is not done while hosts are missing.
        let hosts_seen = before.map_or(0, |r| r.hosts_seen).max(counts.total.saturating_add(counts.offline));
        if previous.is_none_or(|p| moved(counts) > p) && latest == *generation {
            self.update_desired(service, |d| {
                if d.progress.end.is_none() {
                    d.progress.last_progress_at = now;
                }
            });
        }
        self.rollouts.entry((service.clone(), *generation)).or_default().insert(
            key,
            ClusterRollout {
                counts: *counts,
                reported_at: now,
                reported_by: holder.clone(),
                failures: failures.clone(),
                pending: pending.clone(),
                hosts_seen,
            },
        );
        Ok(CommandOutput::RolloutRecorded)
    }
}

fn gate<'a>(desired: &'a DesiredVersion, clusters: &'a [ClusterSnapshot<'a>]) -> Gate<'a> {
    Gate {
        policy: &desired.policy,
        progress: &desired.progress,
        control: desired.control,
        set_at: desired.set_at,
        clusters,
    }
}

fn refuse(service: &ServiceName, generation: u64, what: &str) -> CommandError {
    CommandError::RolloutControl { service: service.clone(), generation, what: what.to_string() }
}

/// The roll back target among `history` (oldest first) for a rollout of `failed_build`: the latest entry
/// with another build whose rollout completed; failing that, the latest with another build whose rollout
/// neither failed nor was rolled back. Pure, so the simulation's `rollback_restores_previous` can hold the
/// committed roll back to the same rule over the history as it stood.
pub fn last_known_good(history: &[DesiredVersion], failed_build: JobId) -> Option<&DesiredVersion> {
    let others = || history.iter().rev().filter(|d| d.build != failed_build);
    let ended = |d: &DesiredVersion| d.progress.end.as_ref().map(|e| e.state);
    others()
        .find(|d| ended(d) == Some(EndState::Complete))
        .or_else(|| others().find(|d| !matches!(ended(d), Some(EndState::Failed | EndState::RolledBack))))
}
