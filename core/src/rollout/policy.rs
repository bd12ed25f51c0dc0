//! The rollout policy: which hosts switch in which wave, how long a wave bakes, how many failures it may
//! take, and what happens when it takes more.
//!
//! Written in a build's `[deploy]` section (as [`RolloutSection`]) and recorded with the build; a deploy
//! request may override any field with the same section. [`RolloutSection::apply_to`] validates the result
//! as a whole, so a policy that cannot work is refused when the build is recorded or the deploy is asked
//! for (the error names the field), never discovered halfway through a rollout.

use crate::ids::{ClusterName, InvalidValue, Region};
use serde::{Deserialize, Serialize};

/// Time a wave without any progress may take before the rollout fails, when the policy names none.
pub const DEFAULT_PROGRESS_DEADLINE_SECS: u64 = 600;
/// Longest progress deadline or bake a policy may ask for, seconds (a day: every rollout ends).
pub const MAX_POLICY_SECS: u64 = 86_400;
/// Most waves a policy may have.
pub const MAX_WAVES: usize = 16;

/// How much a wave adds to the hosts allowed to run the new release.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WaveSize {
    /// This many more hosts (spread over the selected clusters in name order).
    Hosts(u64),
    /// Up to this percentage of every selected cluster's targeted hosts (percentages are cumulative).
    Percent(u64),
    /// This many more whole clusters (the first, in region and cluster name order, not yet wholly admitted).
    Clusters(u64),
}

/// One wave of a rollout.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Wave {
    /// What it adds.
    pub size: WaveSize,
    /// Only hosts of this region.
    #[serde(default)]
    pub region: Option<Region>,
    /// Only hosts of this cluster (of `region`).
    #[serde(default)]
    pub cluster: Option<ClusterName>,
    /// The wave opens only when a deployer presses Promote.
    #[serde(default)]
    pub manual: bool,
}

impl Wave {
    /// Whether the wave's hosts may come from `(region, cluster)`.
    pub fn selects(&self, region: &Region, cluster: &ClusterName) -> bool {
        self.region.as_ref().is_none_or(|r| r == region) && self.cluster.as_ref().is_none_or(|c| c == cluster)
    }

    /// The wave as people read it: `1 host in us`, `50 %`, `1 cluster`, with `(manual)`.
    pub fn describe(&self) -> String {
        let size = match self.size {
            WaveSize::Hosts(1) => "1 host".to_string(),
            WaveSize::Hosts(n) => format!("{n} hosts"),
            WaveSize::Percent(p) => format!("{p} %"),
            WaveSize::Clusters(1) => "1 cluster".to_string(),
            WaveSize::Clusters(n) => format!("{n} clusters"),
        };
        let place = match (&self.region, &self.cluster) {
            (Some(r), Some(c)) => format!(" in {r}/{c}"),
            (Some(r), None) => format!(" in {r}"),
            _ => String::new(),
        };
        format!("{size}{place}{}", if self.manual { " (manual)" } else { "" })
    }
}

/// How many failed hosts a wave may have before the rollout stops.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureBudget {
    /// At most this many failed hosts in the wave.
    Hosts(u64),
    /// At most this percentage of the hosts the wave admitted.
    Percent(u64),
}

impl FailureBudget {
    /// Whether `failed` of `admitted` hosts in a wave is more than the budget allows.
    pub fn exceeded(self, failed: u64, admitted: u64) -> bool {
        match self {
            Self::Hosts(n) => failed > n,
            Self::Percent(p) => u128::from(failed) * 100 > u128::from(p) * u128::from(admitted),
        }
    }

    /// As written in `cascade.toml`: `2` or `"5%"`.
    pub fn describe(self) -> String {
        match self {
            Self::Hosts(n) => format!("{n} hosts"),
            Self::Percent(p) => format!("{p} %"),
        }
    }
}

/// What a rollout does when a wave's failures exceed the budget.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnFailure {
    /// Stop: no host switches any more; hosts that switched keep the new release.
    #[default]
    Halt,
    /// Stop, then deploy the previous build to every host (the kept release: no transfer).
    Rollback,
}

impl OnFailure {
    /// As people write it (`on_failure` in `cascade.toml` takes `halt` or `rollback`).
    pub fn name(self) -> &'static str {
        match self {
            Self::Halt => "halt",
            Self::Rollback => "roll back",
        }
    }
}

/// A validated rollout policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RolloutPolicy {
    /// In order; the last one admits every targeted host.
    pub waves: Vec<Wave>,
    /// Most hosts of one cluster switching at the same time; 0: no limit.
    pub max_unavailable: u64,
    /// How long a wave must stay healthy before the next one opens, seconds.
    pub bake_secs: u64,
    /// Failed hosts a wave may have.
    pub failure_budget: FailureBudget,
    /// What happens when a wave has more.
    pub on_failure: OnFailure,
    /// A wave in which no host makes progress for this long ends the rollout as failed, seconds.
    pub progress_deadline_secs: u64,
}

impl Default for RolloutPolicy {
    /// One wave of every host, no bake, no failure tolerated, halt, ten minutes without progress.
    fn default() -> Self {
        Self {
            waves: vec![Wave { size: WaveSize::Percent(100), region: None, cluster: None, manual: false }],
            max_unavailable: 0,
            bake_secs: 0,
            failure_budget: FailureBudget::Hosts(0),
            on_failure: OnFailure::Halt,
            progress_deadline_secs: DEFAULT_PROGRESS_DEADLINE_SECS,
        }
    }
}

impl RolloutPolicy {
    /// The policy of a rollback: every host at once (they hold the release already), halting on failure
    /// (a rollback is never rolled back), with `from`'s concurrency and deadline.
    pub fn rollback_of(from: &Self) -> Self {
        Self {
            max_unavailable: from.max_unavailable,
            progress_deadline_secs: from.progress_deadline_secs,
            failure_budget: FailureBudget::Percent(100),
            ..Self::default()
        }
    }

    /// Checks the rules a policy from outside (a worker's report, an older log entry) must keep.
    pub fn validate(&self) -> Result<(), InvalidValue> {
        let waves = &self.waves;
        if waves.is_empty() || waves.len() > MAX_WAVES {
            return Err(InvalidValue::new(
                "deploy.waves",
                format!("needs 1 to {MAX_WAVES} waves; got {}", waves.len()),
            ));
        }
        let mut last_percent = 0;
        for (index, wave) in waves.iter().enumerate() {
            let field = format!("deploy.waves[{index}]");
            match wave.size {
                WaveSize::Percent(p) if p == 0 || p > 100 => {
                    return Err(InvalidValue::new(&field, format!("percent must be 1 to 100; got {p}")))
                }
                WaveSize::Hosts(0) | WaveSize::Clusters(0) => {
                    return Err(InvalidValue::new(&field, "hosts and clusters must be at least 1"))
                }
                WaveSize::Percent(p) if wave.region.is_none() => {
                    if p < last_percent {
                        return Err(InvalidValue::new(
                            &field,
                            format!("percentages are cumulative and must grow: {p} % after {last_percent} %"),
                        ));
                    }
                    last_percent = p;
                }
                _ => {}
            }
            if wave.cluster.is_some() && wave.region.is_none() {
                return Err(InvalidValue::new(&field, "a cluster is named within a region: set `region` too"));
            }
        }
        let last = &waves[waves.len() - 1];
        if last.size != WaveSize::Percent(100) || last.region.is_some() {
            return Err(InvalidValue::new(
                &format!("deploy.waves[{}]", waves.len() - 1),
                "the last wave must be {percent = 100} without a region, so the rollout reaches every targeted host",
            ));
        }
        match self.failure_budget {
            FailureBudget::Percent(p) if p > 100 => {
                return Err(InvalidValue::new("deploy.failure_budget", format!("at most 100 %; got {p} %")))
            }
            FailureBudget::Hosts(n) => {
                if let Some(smallest) = waves
                    .iter()
                    .filter_map(|w| match w.size {
                        WaveSize::Hosts(h) => Some(h),
                        _ => None,
                    })
                    .min()
                {
                    if n > smallest {
                        return Err(InvalidValue::new(
                            "deploy.failure_budget",
                            format!("{n} failed hosts is over the size of a wave of {smallest} hosts; use at most {smallest}, or a percentage"),
                        ));
                    }
                }
            }
            FailureBudget::Percent(_) => {}
        }
        if self.bake_secs > MAX_POLICY_SECS {
            return Err(InvalidValue::new(
                "deploy.bake_secs",
                format!("at most {MAX_POLICY_SECS}; got {}", self.bake_secs),
            ));
        }
        if self.progress_deadline_secs == 0 || self.progress_deadline_secs > MAX_POLICY_SECS {
            return Err(InvalidValue::new(
                "deploy.progress_deadline_secs",
                format!("must be 1 to {MAX_POLICY_SECS}; got {}", self.progress_deadline_secs),
            ));
        }
        Ok(())
    }
}

/// `[[deploy.waves]]` entries as written: exactly one of `hosts`, `percent` and `clusters`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WaveSection {
    /// Adds this many hosts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hosts: Option<u64>,
    /// Reaches this percentage of targeted hosts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub percent: Option<u64>,
    /// Adds this many whole clusters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clusters: Option<u64>,
    /// Only this region's hosts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// Only this cluster's hosts (with `region`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<String>,
    /// `"manual"`: wait for Promote; `"auto"` (the default): open when the previous wave baked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval: Option<String>,
}

/// A failure budget as written: a number of hosts (`2`) or a percentage (`"5%"`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum BudgetText {
    /// Hosts.
    Hosts(u64),
    /// `"N%"` or `"N"`.
    Text(String),
}

/// The rollout fields of `[deploy]`, or of a deploy request's `rollout` override, as written (every field
/// optional: an absent field keeps the base policy's value).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RolloutSection {
    /// The waves, in order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waves: Option<Vec<WaveSection>>,
    /// Most hosts of a cluster switching at once (0: no limit).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_unavailable: Option<u64>,
    /// Seconds a wave must stay healthy before the next opens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bake_secs: Option<u64>,
    /// Failed hosts a wave may have: `2` or `"5%"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_budget: Option<BudgetText>,
    /// `"halt"` or `"rollback"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_failure: Option<String>,
    /// Seconds a wave may go without progress.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress_deadline_secs: Option<u64>,
}

impl RolloutSection {
    /// Whether nothing is overridden.
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }

    /// `base` with every field this section sets replaced, validated as a whole.
    pub fn apply_to(&self, base: &RolloutPolicy) -> Result<RolloutPolicy, InvalidValue> {
        self.to_override()?.apply_to(base)
    }

    /// The section with every field parsed (waves, budget, `on_failure`): what a deploy command carries.
    pub fn to_override(&self) -> Result<RolloutOverride, InvalidValue> {
        let waves = match &self.waves {
            Some(waves) => Some(waves.iter().enumerate().map(|(i, w)| w.to_wave(i)).collect::<Result<_, _>>()?),
            None => None,
        };
        let on_failure = match self.on_failure.as_deref() {
            None => None,
            Some("halt") => Some(OnFailure::Halt),
            Some("rollback") => Some(OnFailure::Rollback),
            Some(other) => {
                return Err(InvalidValue::new(
                    "deploy.on_failure",
                    format!("must be \"halt\" or \"rollback\"; got {other:?}"),
                ))
            }
        };
        Ok(RolloutOverride {
            waves,
            max_unavailable: self.max_unavailable,
            bake_secs: self.bake_secs,
            failure_budget: self.failure_budget.as_ref().map(parse_budget).transpose()?,
            on_failure,
            progress_deadline_secs: self.progress_deadline_secs,
        })
    }
}

/// A deploy's overrides of its build's policy, parsed: what [`crate::Command::SetDesiredVersion`] carries.
///
/// Separate from [`RolloutSection`] because the Raft log is bincode, which has neither untagged enums
/// (the section's `2`-or-`"5%"` budget) nor omitted fields: every field here is always written.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RolloutOverride {
    /// The waves, in order.
    pub waves: Option<Vec<Wave>>,
    /// Most hosts of a cluster switching at once.
    pub max_unavailable: Option<u64>,
    /// Seconds a wave must stay healthy.
    pub bake_secs: Option<u64>,
    /// Failed hosts a wave may have.
    pub failure_budget: Option<FailureBudget>,
    /// Halt or roll back.
    pub on_failure: Option<OnFailure>,
    /// Seconds a wave may go without progress.
    pub progress_deadline_secs: Option<u64>,
}

impl RolloutOverride {
    /// `base` with every field this override sets replaced, validated as a whole.
    pub fn apply_to(&self, base: &RolloutPolicy) -> Result<RolloutPolicy, InvalidValue> {
        let mut policy = base.clone();
        if let Some(waves) = &self.waves {
            policy.waves = waves.clone();
        }
        if let Some(n) = self.max_unavailable {
            policy.max_unavailable = n;
        }
        if let Some(secs) = self.bake_secs {
            policy.bake_secs = secs;
        }
        if let Some(budget) = self.failure_budget {
            policy.failure_budget = budget;
        }
        if let Some(on_failure) = self.on_failure {
            policy.on_failure = on_failure;
        }
        if let Some(secs) = self.progress_deadline_secs {
            policy.progress_deadline_secs = secs;
        }
        policy.validate()?;
        Ok(policy)
    }
}

impl WaveSection {
    fn to_wave(&self, index: usize) -> Result<Wave, InvalidValue> {
        let field = format!("deploy.waves[{index}]");
        let size = match (self.hosts, self.percent, self.clusters) {
            (Some(n), None, None) => WaveSize::Hosts(n),
            (None, Some(p), None) => WaveSize::Percent(p),
            (None, None, Some(n)) => WaveSize::Clusters(n),
            _ => return Err(InvalidValue::new(&field, "set exactly one of `hosts`, `percent` and `clusters`")),
        };
        let region = self
            .region
            .as_ref()
            .map(|r| Region::parse(r.clone()).map_err(|e| InvalidValue::new(&format!("{field}.region"), e.to_string())))
            .transpose()?;
        let cluster = self
            .cluster
            .as_ref()
            .map(|c| {
                ClusterName::parse(c.clone()).map_err(|e| InvalidValue::new(&format!("{field}.cluster"), e.to_string()))
            })
            .transpose()?;
        let manual = match self.approval.as_deref() {
            None | Some("auto") => false,
            Some("manual") => true,
            Some(other) => {
                return Err(InvalidValue::new(
                    &format!("{field}.approval"),
                    format!("must be \"manual\" or \"auto\"; got {other:?}"),
                ))
            }
        };
        Ok(Wave { size, region, cluster, manual })
    }
}

fn parse_budget(budget: &BudgetText) -> Result<FailureBudget, InvalidValue> {
    let field = "deploy.failure_budget";
    match budget {
        BudgetText::Hosts(n) => Ok(FailureBudget::Hosts(*n)),
        BudgetText::Text(text) => {
            let text = text.trim();
            let (number, percent) = match text.strip_suffix('%') {
                Some(n) => (n.trim(), true),
                None => (text, false),
            };
            let n: u64 = number.parse().map_err(|_| {
                InvalidValue::new(field, format!("a number of hosts (2) or a percentage (\"5%\"); got {text:?}"))
            })?;
            Ok(if percent { FailureBudget::Percent(n) } else { FailureBudget::Hosts(n) })
        }
    }
}
