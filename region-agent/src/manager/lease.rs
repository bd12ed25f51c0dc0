//! The manager lease: two managers of a cluster never act at once.
//!
//! A task asks the state machine for the cluster's lease every third of its time to live. The holder acts
//! (registers hosts, schedules, seeds, reports) only until a local deadline computed from when it *sent* the
//! request that granted the lease, minus a margin: the leader stamps the grant no earlier than that, so the
//! manager stops before any replica could consider the lease free. A standby keeps asking and takes over
//! once the lease expired.

use super::control::{ControlPlane, LeaseError};
use super::{Event, Manager, Phase, Rollout};
use crate::protocol::ManagerMessage;
use cascade_core::api::ManagerLeaseRequest;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;

/// What one lease request found.
pub(super) enum LeaseAnswer {
    /// Granted or renewed: act until this local instant unless renewed again.
    Granted {
        /// Local deadline (send time + ttl − margin).
        until: Instant,
    },
    /// Another manager holds it; the sentence names it and its expiry.
    Refused(String),
}

/// The default holder id: host name and process id, unique among running managers.
pub(super) fn default_holder() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let host: String = host.trim().chars().filter(char::is_ascii_graphic).take(100).collect();
    let host = if host.is_empty() { "manager".to_string() } else { host };
    format!("{host}-{}", std::process::id())
}

/// The part of the lease a manager trusts locally: a tenth is kept as a margin for clock-rate differences
/// between the manager and successive Raft leaders.
fn local_validity(ttl: Duration) -> Duration {
    ttl - ttl / 10
}

/// Asks for the lease every `ttl / 3` and forwards what it finds. Each request is bounded by that period
/// and a request that failed or timed out is retried after a tenth of the ttl, not a whole period: under a
/// loaded control plane one slow answer must not use up the lease (a request bounded by the whole ttl let
/// it lapse while the manager waited).
pub(super) async fn keep_lease<C: ControlPlane>(
    client: Arc<C>,
    request: ManagerLeaseRequest,
    events: mpsc::UnboundedSender<Event>,
) {
    let ttl = Duration::from_millis(request.ttl_ms);
    let period = (ttl / 3).max(Duration::from_millis(50));
    let retry = (ttl / 10).max(Duration::from_millis(20));
    loop {
        let sent = Instant::now();
        let answer = match tokio::time::timeout(period, client.acquire_manager_lease(&request)).await {
            Ok(Ok(())) => Some(LeaseAnswer::Granted { until: sent + local_validity(ttl) }),
            Ok(Err(LeaseError::Held(detail))) => Some(LeaseAnswer::Refused(detail)),
            Ok(Err(LeaseError::Unreachable(e))) => {
                tracing::warn!(holder = %request.holder, "cannot reach the cluster for the manager lease: {e}");
                None
            }
            Err(_) => {
                tracing::warn!(holder = %request.holder, "no answer to the manager lease request within {period:?}; asking again");
                None
            }
        };
        let next = if answer.is_some() { sent + period } else { Instant::now() + retry };
        if let Some(answer) = answer {
            if events.send(Event::Lease(answer)).is_err() {
                return;
            }
        }
        tokio::time::sleep_until(next).await;
    }
}

/// Gives the lease up at shutdown (ttl 0) so the standby takes over at once; bounded, best effort.
pub(super) async fn release<C: ControlPlane>(client: &C, mut request: ManagerLeaseRequest) {
    request.ttl_ms = 0;
    match tokio::time::timeout(Duration::from_secs(2), client.acquire_manager_lease(&request)).await {
        Ok(Ok(_)) => tracing::info!(holder = %request.holder, "manager lease given up"),
        Ok(Err(e)) => tracing::warn!(holder = %request.holder, "cannot give the manager lease up: {e}"),
        Err(_) => tracing::warn!(holder = %request.holder, "giving the manager lease up timed out"),
    }
}

impl<C: ControlPlane> Manager<C> {
    /// Whether this manager acts for its cluster now.
    pub(super) fn is_active(&self) -> bool {
        self.lease_until.is_some_and(|until| Instant::now() < until)
    }

    /// Takes in a lease answer: becomes (or stays) active on a grant, stands by on a refusal.
    pub(super) fn lease_answer(&mut self, answer: LeaseAnswer) {
        match answer {
            LeaseAnswer::Granted { until } if Instant::now() < until => {
                if self.lease_until.is_none() {
                    tracing::info!(holder = %self.holder, region = %self.config.region, cluster = %self.config.cluster, "acquired the manager lease: acting for the cluster");
                    // Report every rollout again: the previous holder's counts are not ours.
                    self.last_reported.clear();
                    self.status.lease = format!("held by {} (this manager)", self.holder);
                }
                self.lease_until = Some(until);
                self.active_flag.store(true, Ordering::Relaxed);
                self.status.role = "active".into();
            }
            LeaseAnswer::Granted { .. } => self.check_lease(),
            LeaseAnswer::Refused(detail) => {
                if self.lease_until.is_some() {
                    self.stand_by(&detail);
                }
                self.status.lease = detail;
            }
        }
    }

    /// Stands by at once when the local deadline passed without a renewal.
    pub(super) fn check_lease(&mut self) {
        if self.lease_until.is_some() && !self.is_active() {
            self.stand_by("the manager lease was not renewed in time");
        }
    }

    /// Stops acting: no more scheduling, seeding or reports; hosts are told to go to the other manager, and
    /// every rollout starts afresh should the lease come back.
    fn stand_by(&mut self, why: &str) {
        tracing::warn!(holder = %self.holder, "standing by: {why}");
        self.lease_until = None;
        self.active_flag.store(false, Ordering::Relaxed);
        self.status.role = "standby".into();
        let live: Vec<u32> = self.live_hosts().collect();
        for id in live {
            self.send(id, ManagerMessage::Refused { reason: format!("manager {} stands by: {why}", self.holder) });
            self.host_left(id);
            if let Some(host) = self.hosts.get_mut(&id) {
                host.tx = None;
            }
        }
        self.metrics.hosts_connected(0);
        for rollout in self.rollouts.values_mut() {
            restart(rollout);
        }
    }

    /// Why a host is refused while this manager stands by.
    pub(super) fn refusal(&self) -> String {
        format!("manager {} is the standby for its cluster ({})", self.holder, self.status.lease)
    }
}

/// Forgets a rollout's host progress and gives it a fresh scheduler: hosts report what they hold again.
fn restart(rollout: &mut Rollout) {
    rollout.joined.clear();
    rollout.activated.clear();
    rollout.activating.clear();
    rollout.failed.clear();
    if let Phase::Running { manifest, scheduler, .. } = &mut rollout.phase {
        if let Ok(fresh) = super::fresh_scheduler(manifest, rollout.generation) {
            *scheduler = fresh;
        }
    }
}
