//! Region manager leases: at most one manager of a (region, cluster) acts at a time.
//!
//! Operators run two managers per cluster for availability. Both ask for the cluster's lease through the
//! state machine ([`crate::Command::AcquireManagerLease`]) every third of its time to live; the holder
//! renews it, the other is refused and stands by until the lease expires. Expiry is judged by the
//! leader-stamped time of the request, like job leases, so every replica agrees on who holds it. Rollout
//! reports of a cluster that has a lease are accepted only from its current holder, so a manager that lost
//! its lease (paused, partitioned) cannot overwrite the counts of its successor.

use crate::command::{CommandError, CommandOutput, CommandResult};
use crate::ids::{ClusterName, InvalidValue, Principal, Region, UnixMillis};
use crate::state::State;
use serde::{Deserialize, Serialize};

/// Longest holder id: a host name and a pid, or an address, fit easily.
pub const MAX_HOLDER_BYTES: usize = 128;

/// Longest time to live a manager may ask for (ten minutes): a lease must end soon after its holder died.
pub const MAX_MANAGER_LEASE_TTL_MS: u64 = 600_000;

/// Who acts for one (region, cluster), and until when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManagerLease {
    /// The manager's unique id (its config `name`, or host name and pid).
    pub holder: String,
    /// When this holder acquired it (renewals keep it), leader's clock.
    pub since: UnixMillis,
    /// The lease is free from this time on unless renewed, leader's clock.
    pub expires_at: UnixMillis,
}

impl ManagerLease {
    /// Whether `holder` may act at `now`: the lease is its own and has not expired.
    pub fn held_by(&self, holder: &str, now: UnixMillis) -> bool {
        self.holder == holder && now < self.expires_at
    }
}

/// Checks a holder id: 1 to [`MAX_HOLDER_BYTES`] printable ASCII characters without spaces.
pub fn validate_holder(holder: &str) -> Result<(), InvalidValue> {
    if holder.is_empty() || holder.len() > MAX_HOLDER_BYTES || !holder.chars().all(|c| c.is_ascii_graphic()) {
        return Err(InvalidValue::new(
            "holder",
            format!("must be 1 to {MAX_HOLDER_BYTES} printable ASCII characters without spaces"),
        ));
    }
    Ok(())
}

impl State {
    /// Grants or renews the lease of (region, cluster) to `holder` until `now + ttl_ms` when it is free,
    /// expired or already `holder`'s; refuses otherwise, naming the holder and its expiry. A `ttl_ms` of 0
    /// from the holder gives the lease up (it expires at `now`), so a standby takes over at once.
    pub(crate) fn acquire_manager_lease(
        &mut self,
        now: UnixMillis,
        actor: &Principal,
        region: &Region,
        cluster: &ClusterName,
        holder: &str,
        ttl_ms: u64,
    ) -> CommandResult {
        validate_holder(holder).map_err(CommandError::Invalid)?;
        if ttl_ms > MAX_MANAGER_LEASE_TTL_MS {
            return Err(CommandError::Invalid(InvalidValue::new(
                "ttl_ms",
                format!("must be at most {MAX_MANAGER_LEASE_TTL_MS} ms"),
            )));
        }
        let current = self.manager_leases.get(region).and_then(|clusters| clusters.get(cluster));
        let renewal = current.is_some_and(|lease| lease.holder == holder);
        if let Some(lease) = current.filter(|lease| !renewal && now < lease.expires_at) {
            return Err(CommandError::ManagerLeaseHeld {
                region: region.clone(),
                cluster: cluster.clone(),
                holder: lease.holder.clone(),
                expires_at: lease.expires_at,
            });
        }
        // A renewal of a lease that already expired keeps its start only if nobody could have acted since.
        let since = match current {
            Some(lease) if renewal && now < lease.expires_at => lease.since,
            _ => now,
        };
        let lease =
            ManagerLease { holder: holder.to_string(), since, expires_at: UnixMillis(now.0.saturating_add(ttl_ms)) };
        if !renewal || since == now {
            let detail = format!("{region}/{cluster} to {holder} until {}", lease.expires_at.0);
            self.audit(now, actor, "acquire_manager_lease", detail);
        }
        self.manager_leases.entry(region.clone()).or_default().insert(cluster.clone(), lease.clone());
        Ok(CommandOutput::ManagerLease(lease))
    }

    /// Refuses a rollout report for (region, cluster) unless no lease was ever taken there or `holder`
    /// holds it at `now`.
    pub(crate) fn check_report_holder(
        &self,
        now: UnixMillis,
        region: &Region,
        cluster: &ClusterName,
        holder: Option<&str>,
    ) -> Result<(), CommandError> {
        let Some(lease) = self.manager_leases.get(region).and_then(|clusters| clusters.get(cluster)) else {
            return Ok(());
        };
        if holder.is_some_and(|holder| lease.held_by(holder, now)) {
            return Ok(());
        }
        Err(CommandError::NotManagerLeaseHolder {
            reporter: holder.unwrap_or("(unnamed)").to_string(),
            expired: lease.expires_at <= now,
            region: region.clone(),
            cluster: cluster.clone(),
            holder: lease.holder.clone(),
            expires_at: lease.expires_at,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::{Command, Request};
    use crate::ids::{CommitSha, Digest, RepoUrl, ServiceName, WorkerId};
    use crate::job::Artifact;
    use crate::state::RolloutCounts;

    const TTL: u64 = 10_000;

    fn at(ms: u64, command: Command) -> Request {
        Request { at: UnixMillis(ms), actor: Principal::parse("agent").unwrap(), command }
    }

    fn acquire(holder: &str, ttl_ms: u64) -> Command {
        Command::AcquireManagerLease {
            region: Region::parse("us").unwrap(),
            cluster: ClusterName::parse("c1").unwrap(),
            holder: holder.into(),
            ttl_ms,
        }
    }

    fn granted(state: &mut State, ms: u64, holder: &str) -> ManagerLease {
        match state.apply(&at(ms, acquire(holder, TTL))) {
            Ok(CommandOutput::ManagerLease(lease)) => lease,
            other => panic!("{holder} at {ms}: {other:?}"),
        }
    }

    #[test]
    fn grants_a_free_lease_and_renews_it_for_its_holder() {
        let mut state = State::default();
        let first = granted(&mut state, 1_000, "m-a");
        assert_eq!((first.since, first.expires_at), (UnixMillis(1_000), UnixMillis(11_000)));
        let renewed = granted(&mut state, 4_000, "m-a");
        assert_eq!((renewed.since, renewed.expires_at), (UnixMillis(1_000), UnixMillis(14_000)));
        let audited = state.audit.iter().filter(|e| e.action == "acquire_manager_lease").count();
        assert_eq!(audited, 1, "renewals are not audited");
    }

    #[test]
    fn refuses_another_holder_while_the_lease_runs_and_changes_nothing() {
        let mut state = State::default();
        granted(&mut state, 1_000, "m-a");
        let before = state.clone();
        let err = state.apply(&at(10_999, acquire("m-b", TTL))).unwrap_err();
        assert_eq!(
            err,
            CommandError::ManagerLeaseHeld {
                region: Region::parse("us").unwrap(),
                cluster: ClusterName::parse("c1").unwrap(),
                holder: "m-a".into(),
                expires_at: UnixMillis(11_000),
            }
        );
        assert!(err.to_string().contains("m-a") && err.to_string().contains("11000"), "{err}");
        assert_eq!(err.kind(), "wrong_state");
        assert_eq!(state, before, "a refusal changes nothing");
    }

    #[test]
    fn another_manager_takes_over_an_expired_lease_and_the_old_holder_is_refused() {
        let mut state = State::default();
        granted(&mut state, 1_000, "m-a");
        let taken = granted(&mut state, 11_000, "m-b");
        assert_eq!((taken.holder.as_str(), taken.since), ("m-b", UnixMillis(11_000)));
        assert!(matches!(
            state.apply(&at(12_000, acquire("m-a", TTL))),
            Err(CommandError::ManagerLeaseHeld { holder, .. }) if holder == "m-b"
        ));
    }

    #[test]
    fn a_holder_gives_its_lease_up_with_ttl_zero() {
        let mut state = State::default();
        granted(&mut state, 1_000, "m-a");
        state.apply(&at(2_000, acquire("m-a", 0))).unwrap();
        assert_eq!(granted(&mut state, 2_000, "m-b").holder, "m-b");
    }

    #[test]
    fn invalid_holders_and_ttls_are_refused() {
        let mut state = State::default();
        for (holder, ttl) in [("", TTL), ("has space", TTL), (&"x".repeat(129)[..], TTL), ("m-a", 600_001)] {
            let err = state.apply(&at(1_000, acquire(holder, ttl))).unwrap_err();
            assert!(matches!(err, CommandError::Invalid(_)), "{holder:?} {ttl}: {err:?}");
        }
        assert_eq!(state, State::default());
    }

    #[test]
    fn replaying_the_same_requests_gives_the_same_state() {
        let requests: Vec<Request> = [(1_000, "m-a"), (2_000, "m-b"), (5_000, "m-a"), (15_001, "m-b"), (16_000, "m-a")]
            .into_iter()
            .map(|(ms, holder)| at(ms, acquire(holder, TTL)))
            .collect();
        let run = || {
            let mut state = State::default();
            let results: Vec<_> = requests.iter().map(|r| state.apply(r)).collect();
            (state, results)
        };
        let (a, results) = run();
        assert_eq!(run(), (a.clone(), results.clone()));
        let holders: Vec<bool> = results.iter().map(Result::is_ok).collect();
        assert_eq!(holders, [true, false, true, true, false]);
        // A leader whose clock is behind cannot move time backwards to revive an expired lease.
        let mut state = a;
        assert!(state.apply(&at(1, acquire("m-a", TTL))).is_err());
    }

    /// A state with one deployed service, so rollout reports have a generation to name.
    fn deployed() -> State {
        let mut state = State::default();
        let service = ServiceName::parse("app").unwrap();
        let submit = Command::SubmitBuild {
            repo: RepoUrl::parse("https://git.example.com/org/repo.git").unwrap(),
            commit: CommitSha::parse("ab".repeat(20)).unwrap(),
            service: service.clone(),
            idempotency_key: None,
        };
        state.apply(&at(1, submit)).unwrap();
        let Ok(CommandOutput::Claimed(Some(claimed))) =
            state.apply(&at(2, Command::Claim { worker: WorkerId::parse("w1").unwrap() }))
        else {
            panic!("claim");
        };
        let artifact = Artifact {
            digest: Digest::parse("cd".repeat(32)).unwrap(),
            size: 1,
            manifest_key: "manifests/x".into(),
            deploy: Default::default(),
        };
        state.apply(&at(3, Command::Succeed { lease: claimed.lease, artifact })).unwrap();
        state.apply(&at(4, Command::SetDesiredVersion { service, build: claimed.job.id, rollout: None })).unwrap();
        state
    }

    fn report(holder: Option<&str>, active: u64) -> Command {
        let (service, generation) = (ServiceName::parse("app").unwrap(), 1);
        let (region, cluster) = (Region::parse("us").unwrap(), ClusterName::parse("c1").unwrap());
        let counts = RolloutCounts { total: 3, active, ..RolloutCounts::default() };
        Command::ReportRollout(Box::new(crate::api::RolloutReport {
            service,
            generation,
            region,
            cluster,
            counts,
            failures: Default::default(),
            holder: holder.map(str::to_string),
            pending: Vec::new(),
        }))
    }

    #[test]
    fn only_the_holder_reports_once_a_lease_exists() {
        let mut state = deployed();
        state.apply(&at(100, report(None, 1))).expect("no lease yet: any manager reports");
        granted(&mut state, 1_000, "m-a");
        state.apply(&at(1_100, report(Some("m-a"), 2))).expect("the holder reports");
        let before = state.clone();
        for stale in [None, Some("m-b")] {
            let err = state.apply(&at(1_200, report(stale, 3))).unwrap_err();
            assert!(matches!(err, CommandError::NotManagerLeaseHolder { ref holder, .. } if holder == "m-a"), "{err}");
        }
        let expired = state.apply(&at(11_000, report(Some("m-a"), 3))).unwrap_err();
        assert!(
            matches!(expired, CommandError::NotManagerLeaseHolder { ref reporter, expired: true, .. } if reporter == "m-a"),
            "an expired holder is refused, and told its lease expired: {expired}"
        );
        assert!(expired.to_string().contains("expired at"), "{expired}");
        assert_eq!(state, before);
        granted(&mut state, 11_000, "m-b");
        state.apply(&at(11_100, report(Some("m-b"), 3))).unwrap();
        let cluster = &state.rollouts[&(ServiceName::parse("app").unwrap(), 1)]
            [&(Region::parse("us").unwrap(), ClusterName::parse("c1").unwrap())];
        assert_eq!((cluster.counts.active, cluster.reported_by.as_deref()), (3, Some("m-b")));
    }
}
