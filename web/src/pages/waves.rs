//! A rollout's waves as the service page shows them: each wave's description, where it stands (done,
//! baking with its countdown, open, waiting, awaiting Promote, not reached, stopped) and the hosts it
//! admits; and a rollout's end, with its reason and the hosts it names.

use cascade_core::rollout::{admitted, bake_remaining_secs, EndState, OpenedWave, RolloutEnd, WaveSize};
use cascade_core::state::{ClusterRollout, DesiredVersion, RolloutControl};
use cascade_core::{ClusterName, Region, UnixMillis};
use maud::{html, Markup};
use std::collections::BTreeMap;

/// Where one wave stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WaveState {
    /// Opened, healthy, and a later wave opened (or the rollout completed).
    Done,
    /// The newest wave is healthy and bakes for this many more seconds.
    Baking(u64),
    /// The newest wave: its hosts are switching (or it is healthy, without a bake, until the next opens).
    Open,
    /// The next wave: opens once the newest is healthy and baked (or, the first, once clusters reported).
    Waiting,
    /// The next wave is manual: it opens when a deployer presses Promote.
    AwaitingPromote,
    /// A later wave.
    NotReached,
    /// The newest wave of a rollout that ended other than complete.
    Stopped(EndState),
}

impl WaveState {
    /// As tests and scripts read it (`data-wave-state`).
    pub fn name(self) -> &'static str {
        match self {
            Self::Done => "done",
            Self::Baking(_) => "baking",
            Self::Open => "open",
            Self::Waiting => "waiting",
            Self::AwaitingPromote => "awaiting promote",
            Self::NotReached => "not reached",
            Self::Stopped(_) => "stopped",
        }
    }

    fn badge_class(self) -> &'static str {
        match self {
            Self::Done => "succeeded",
            Self::Baking(_) | Self::Open => "running",
            Self::Waiting | Self::AwaitingPromote => "queued",
            Self::NotReached => "cancelled",
            Self::Stopped(_) => "failed",
        }
    }
}

/// The state of wave `index` of `desired`'s rollout at `now`.
pub fn wave_state(desired: &DesiredVersion, index: usize, now: UnixMillis) -> WaveState {
    let (policy, progress) = (&desired.policy, &desired.progress);
    let opened = progress.opened.len();
    if let Some(end) = &progress.end {
        return match end.state {
            EndState::Complete => WaveState::Done,
            _ if index + 1 < opened => WaveState::Done,
            state if index + 1 == opened => WaveState::Stopped(state),
            _ => WaveState::NotReached,
        };
    }
    if index + 1 < opened {
        return WaveState::Done;
    }
    if index + 1 == opened {
        if progress.awaiting_approval {
            return WaveState::Done;
        }
        return match (progress.healthy_since, bake_remaining_secs(policy, progress, now)) {
            (Some(_), Some(left)) if left > 0 => WaveState::Baking(left),
            _ => WaveState::Open,
        };
    }
    match (index == opened, progress.awaiting_approval) {
        (true, true) => WaveState::AwaitingPromote,
        (true, false) => WaveState::Waiting,
        (false, _) => WaveState::NotReached,
    }
}

/// Hosts the first `through + 1` waves admit, summed over the clusters that reported; none when it depends
/// on a `hosts` or `clusters` wave that has not opened yet (those are shared out when they open).
pub fn admitted_through(
    desired: &DesiredVersion,
    clusters: &BTreeMap<(Region, ClusterName), ClusterRollout>,
    through: usize,
) -> Option<u64> {
    let (policy, progress) = (&desired.policy, &desired.progress);
    let mut planned = progress.clone();
    planned.end = None;
    planned.opened.truncate(through + 1);
    for wave in policy.waves.iter().take(through + 1).skip(planned.opened.len()) {
        if !matches!(wave.size, WaveSize::Percent(_)) {
            return None;
        }
        let at = progress.last_progress_at;
        planned.opened.push(OpenedWave { at, allotment: Vec::new(), failed_before: 0, admitted_before: 0 });
    }
    Some(
        clusters
            .iter()
            .map(|((region, cluster), report)| admitted(policy, &planned, region, cluster, report.targeted_hosts()))
            .sum(),
    )
}

/// The waves of `desired`'s rollout as a table: description, state, hosts admitted.
pub fn table(
    desired: &DesiredVersion,
    clusters: &BTreeMap<(Region, ClusterName), ClusterRollout>,
    now: UnixMillis,
) -> Markup {
    let total: u64 = clusters.values().map(ClusterRollout::targeted_hosts).sum();
    let opened = desired.progress.opened.len();
    let paused = desired.control == RolloutControl::Paused && desired.progress.end.is_none();
    let mut before = Some(0u64);
    let rows: Vec<_> = (0..desired.policy.waves.len())
        .map(|index| {
            let through = admitted_through(desired, clusters, index);
            let added = through.zip(before).map(|(t, b)| t.saturating_sub(b));
            before = through;
            (index, wave_state(desired, index, now), through, added)
        })
        .collect();
    html! {
        table.list #waves data-waves=(desired.policy.waves.len()) {
            thead { tr { th { "wave" } th { "size" } th { "state" } th { "hosts admitted" } th { "opened" } } }
            tbody {
                @for (index, state, through, added) in rows {
                    tr data-wave=(index + 1) data-wave-state=(state.name()) {
                        td { (index + 1) " of " (desired.policy.waves.len()) }
                        td { (desired.policy.waves[index].describe()) }
                        td {
                            span class={"badge " (state.badge_class())} { (state.name()) }
                            @match state {
                                WaveState::Baking(left) => {
                                    " " span.muted { "healthy, baking, " span.countdown data-countdown=(left) { (left) " s left" } }
                                }
                                WaveState::Open if paused => { " " span.muted { "paused" } }
                                WaveState::AwaitingPromote => { " " span.muted { "a deployer opens it with Promote" } }
                                WaveState::Stopped(end) => { " " span.muted { "the rollout ended " (end.name()) " in this wave" } }
                                _ => {}
                            }
                        }
                        @match (added, through) {
                            _ if clusters.is_empty() => td.muted { "no cluster reported yet" },
                            _ if index >= opened && desired.progress.end.is_some() => td.muted { "none: never opened" },
                            (Some(added), Some(through)) => td data-admitted=(added) data-admitted-total=(through) {
                                "+" (added) " (" (through) " of " (total) ")"
                                @if index >= opened && desired.progress.end.is_none() { span.muted { " when it opens" } }
                            },
                            _ => td.muted { "shared out over the clusters when it opens" },
                        }
                        td { @if let Some(o) = desired.progress.opened.get(index) { (super::time(o.at)) } }
                    }
                }
            }
        }
    }
}

/// The badge class of an end (the build badges' colours).
pub fn end_class(state: EndState) -> &'static str {
    match state {
        EndState::Complete => "succeeded",
        EndState::Failed | EndState::RolledBack | EndState::Aborted => "failed",
        EndState::Superseded => "cancelled",
    }
}

/// A rollout's end, prominently: which end, when, why, and the hosts the reason names. `id` is the element's.
pub fn end_box(id: &str, generation: u64, end: &RolloutEnd) -> Markup {
    html! {
        div id=(id) class={"end " (end_class(end.state))} data-end=(end.state.name()) role="status" {
            p.end-title {
                span class={"badge " (end_class(end.state))} { (end.state.name()) }
                " "
                strong { "Rollout of generation " (generation) " " (end.state.name()) }
                " at " (super::time(end.at))
            }
            p.reason { (end.reason) }
            @if !end.hosts.is_empty() {
                ul.end-hosts { @for host in &end.hosts { li.mono { (host) } } }
            }
        }
    }
}
