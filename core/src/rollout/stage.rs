//! Where a rollout stands, in words: the one sentence `cascade deploy --follow`, `cascade status` and the
//! console all show, so the three never disagree about a rollout.

use super::policy::RolloutPolicy;
use super::progress::RolloutProgress;
use crate::ids::UnixMillis;
use crate::state::RolloutControl;

/// Seconds left of the newest wave's bake at `now`; none when it is not baking (not yet healthy, no bake,
/// or ended).
pub fn bake_remaining_secs(policy: &RolloutPolicy, progress: &RolloutProgress, now: UnixMillis) -> Option<u64> {
    if progress.end.is_some() || policy.bake_secs == 0 {
        return None;
    }
    let since = progress.healthy_since?;
    let until_ms = since.0.saturating_add(policy.bake_secs.saturating_mul(1000));
    Some(until_ms.saturating_sub(now.0).div_ceil(1000))
}

/// The rollout's stage as one sentence: `wave 2 of 3 (50 %): baking, 4 s left`,
/// `wave 1 of 2 (1 host) healthy; wave 2 (100 %, manual) waits for Promote`, `rolled back: …`.
pub fn describe_stage(
    policy: &RolloutPolicy,
    progress: &RolloutProgress,
    control: RolloutControl,
    now: UnixMillis,
) -> String {
    if let Some(end) = &progress.end {
        return format!("{}: {}", end.state.name(), end.reason);
    }
    let of = policy.waves.len();
    let paused = if control == RolloutControl::Paused { "paused; " } else { "" };
    let Some(index) = progress.opened.len().checked_sub(1) else {
        return format!("{paused}wave 1 of {of} opens once every cluster has reported its hosts");
    };
    let wave = policy.waves.get(index).map(super::Wave::describe).unwrap_or_default();
    let head = format!("{paused}wave {} of {of} ({wave})", index + 1);
    if progress.awaiting_approval {
        let next = policy.waves.get(index + 1).map(super::Wave::describe).unwrap_or_default();
        return format!("{head} healthy; wave {} ({next}) waits for Promote", index + 2);
    }
    match (progress.healthy_since, bake_remaining_secs(policy, progress, now)) {
        (Some(_), Some(left)) if left > 0 => format!("{head}: healthy, baking, {left} s left"),
        (Some(_), _) => format!("{head}: healthy"),
        (None, _) => format!("{head}: switching"),
    }
}
