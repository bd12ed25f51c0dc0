//! The deploy form's rollout overrides: waves as TOML array text (`[{hosts = 1}, {percent = 100}]`, as
//! `cascade deploy --waves` takes them), bake seconds, failure budget, what to do on failure, most hosts
//! switching at once and the progress deadline. Parsed into core's [`RolloutSection`]; every bad value is
//! named in a sentence.

use cascade_core::rollout::{BudgetText, RolloutSection, WaveSection};
use maud::{html, Markup};
use serde::Deserialize;

/// The override fields of the deploy form, as typed (an empty field keeps the build's value).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct OverrideFields {
    /// The waves, as a TOML array of inline tables.
    #[serde(default)]
    pub waves: String,
    /// Seconds each wave must stay healthy.
    #[serde(default)]
    pub bake_secs: String,
    /// `2` or `5%`.
    #[serde(default)]
    pub failure_budget: String,
    /// `halt` or `rollback` (empty: the build's).
    #[serde(default)]
    pub on_failure: String,
    /// Most hosts of one cluster switching at once.
    #[serde(default)]
    pub max_unavailable: String,
    /// Seconds a wave may go without progress.
    #[serde(default)]
    pub progress_deadline_secs: String,
}

impl OverrideFields {
    /// The overrides as the deploy request's `rollout` section; none when every field is empty. Checked by
    /// core's own parser too, so a typo is named before anything is sent.
    pub fn section(&self) -> Result<Option<RolloutSection>, String> {
        let waves = match self.waves.trim() {
            "" => None,
            text => Some(parse_waves(text)?),
        };
        let number = |text: &str, what: &str| -> Result<Option<u64>, String> {
            match text.trim() {
                "" => Ok(None),
                text => text
                    .parse::<u64>()
                    .map(Some)
                    .map_err(|_| format!("{what}: {text:?} is not a whole number (0 or more)")),
            }
        };
        let failure_budget = match self.failure_budget.trim() {
            "" => None,
            text => Some(match text.parse::<u64>() {
                Ok(n) => BudgetText::Hosts(n),
                Err(_) => BudgetText::Text(text.to_string()),
            }),
        };
        let on_failure = match self.on_failure.trim() {
            "" => None,
            text => Some(text.to_string()),
        };
        let section = RolloutSection {
            waves,
            max_unavailable: number(&self.max_unavailable, "max unavailable")?,
            bake_secs: number(&self.bake_secs, "bake seconds")?,
            failure_budget,
            on_failure,
            progress_deadline_secs: number(&self.progress_deadline_secs, "progress deadline")?,
        };
        section.to_override().map_err(|e| e.to_string())?;
        Ok((!section.is_empty()).then_some(section))
    }

    /// The fields, for the deploy form `form` (they may sit outside it, so live updates of the page do not
    /// reset what is being typed).
    pub fn fields(&self, form: &str) -> Markup {
        let on_failure = self.on_failure.trim();
        html! {
            details #rollout-overrides open[!self.is_empty()] {
                summary { "Rollout overrides (optional: empty fields keep the build's [deploy] values)" }
                div.field {
                    label for="waves" { "waves" }
                    textarea #waves name="waves" form=(form) rows="2" spellcheck="false"
                        placeholder="[{hosts = 1}, {percent = 50, approval = \"manual\"}, {percent = 100}]" { (self.waves) }
                }
                div.field {
                    label for="bake_secs" { "bake seconds" }
                    input #bake_secs name="bake_secs" form=(form) inputmode="numeric" placeholder="e.g. 60" value=(self.bake_secs);
                }
                div.field {
                    label for="failure_budget" { "failure budget" }
                    input #failure_budget name="failure_budget" form=(form) placeholder="hosts (2) or a percentage (5%)" value=(self.failure_budget);
                }
                div.field {
                    label for="on_failure" { "on failure" }
                    select #on_failure name="on_failure" form=(form) {
                        option value="" selected[on_failure.is_empty()] { "the build's" }
                        option value="halt" selected[on_failure == "halt"] { "halt" }
                        option value="rollback" selected[on_failure == "rollback"] { "roll back" }
                        @if !matches!(on_failure, "" | "halt" | "rollback") {
                            option value=(on_failure) selected { (on_failure) }
                        }
                    }
                }
                div.field {
                    label for="max_unavailable" { "max unavailable" }
                    input #max_unavailable name="max_unavailable" form=(form) inputmode="numeric" placeholder="hosts per cluster at once (0: no limit)" value=(self.max_unavailable);
                }
                div.field {
                    label for="progress_deadline_secs" { "progress deadline" }
                    input #progress_deadline_secs name="progress_deadline_secs" form=(form) inputmode="numeric" placeholder="seconds without progress before it fails" value=(self.progress_deadline_secs);
                }
            }
        }
    }

    fn is_empty(&self) -> bool {
        [
            &self.waves,
            &self.bake_secs,
            &self.failure_budget,
            &self.on_failure,
            &self.max_unavailable,
            &self.progress_deadline_secs,
        ]
        .iter()
        .all(|f| f.trim().is_empty())
    }
}

const WAVES_EXAMPLE: &str = "[{hosts = 1}, {percent = 50}, {percent = 100}]";

/// Reads the waves: a TOML array of inline tables, each one of `hosts`, `percent` and `clusters`, with
/// optional `region`, `cluster` and `approval` (read exactly as `cascade deploy --waves` reads them).
pub fn parse_waves(text: &str) -> Result<Vec<WaveSection>, String> {
    #[derive(Deserialize)]
    struct Waves {
        waves: Vec<WaveSection>,
    }
    let parsed: Waves = toml::from_str(&format!("waves = {text}"))
        .map_err(|e| format!("waves must be a TOML array such as {WAVES_EXAMPLE}: {}", e.message()))?;
    Ok(parsed.waves)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(waves: &str) -> OverrideFields {
        OverrideFields { waves: waves.into(), ..OverrideFields::default() }
    }

    #[test]
    fn reads_the_waves_as_the_cli_does() {
        let waves =
            parse_waves("[{hosts = 1, region = \"us\"}, {percent = 50, approval = 'manual'},\n {percent = 1_00},]")
                .expect("waves");
        assert_eq!(waves.len(), 3);
        assert_eq!((waves[0].hosts, waves[0].region.as_deref()), (Some(1), Some("us")));
        assert_eq!((waves[1].percent, waves[1].approval.as_deref()), (Some(50), Some("manual")));
        assert_eq!(waves[2].percent, Some(100));
        assert!(parse_waves("[]").expect("empty").is_empty());
    }

    #[test]
    fn names_what_is_wrong() {
        for (text, expected) in [
            ("{hosts = 1}", "waves must be a TOML array"),
            ("[{hosts = }]", "waves must be a TOML array"),
            ("[{hosts = 1}", "waves must be a TOML array"),
            ("[{host = 1}]", "unknown field `host`"),
            ("[{hosts = -1}]", "invalid value"),
        ] {
            let error = fields(text).section().expect_err(text);
            assert!(error.contains(expected), "{text}: {error}");
        }
        let error = fields("[{hosts = 1, percent = 5}]").section().expect_err("two sizes");
        assert!(error.contains("set exactly one of `hosts`, `percent` and `clusters`"), "{error}");
    }

    #[test]
    fn empty_fields_override_nothing_and_numbers_are_checked() {
        assert_eq!(OverrideFields::default().section(), Ok(None));
        let bad = OverrideFields { bake_secs: "soon".into(), ..OverrideFields::default() };
        assert_eq!(bad.section(), Err("bake seconds: \"soon\" is not a whole number (0 or more)".to_string()));
        let bad = OverrideFields { on_failure: "explode".into(), ..OverrideFields::default() };
        assert!(bad.section().expect_err("on_failure").contains("must be \"halt\" or \"rollback\""));
        let bad = OverrideFields { failure_budget: "lots".into(), ..OverrideFields::default() };
        assert!(bad.section().expect_err("budget").contains("a number of hosts (2) or a percentage"));
        let good =
            OverrideFields { failure_budget: "5%".into(), bake_secs: " 30 ".into(), ..OverrideFields::default() };
        let section = good.section().expect("valid").expect("not empty");
        assert_eq!((section.bake_secs, section.failure_budget), (Some(30), Some(BudgetText::Text("5%".into()))));
    }
}
