//! `cascade deploy`'s rollout flags and `cascade rollout promote|pause|resume|abort`.

use crate::Output;
use cascade_core::rollout::{BudgetText, RolloutSection, WaveSection};
use cascade_core::ServiceName;
use clap::{Args, Subcommand};
use std::process::ExitCode;

/// Overrides of the build's `[deploy]` rollout policy for this deploy; absent flags keep the build's values.
#[derive(Args, Debug, Default)]
pub struct RolloutArgs {
    /// The waves, as a TOML array: `'[{hosts = 1}, {percent = 50}, {percent = 100}]'` (each wave one of
    /// `hosts`, `percent`, `clusters`; optional `region`, `cluster`, `approval = "manual"`).
    #[arg(long)]
    waves: Option<String>,
    /// Most hosts of one cluster restarting at once (0: no limit).
    #[arg(long)]
    max_unavailable: Option<u64>,
    /// Seconds each wave must stay healthy before the next opens.
    #[arg(long)]
    bake_secs: Option<u64>,
    /// Failed hosts a wave may have: a count (`2`) or a percentage (`5%`).
    #[arg(long)]
    failure_budget: Option<String>,
    /// Over the budget: `halt` (stop where it is) or `rollback` (deploy the previous build again).
    #[arg(long)]
    on_failure: Option<String>,
    /// Seconds a wave may go without any host making progress before the rollout fails.
    #[arg(long)]
    progress_deadline_secs: Option<u64>,
}

impl RolloutArgs {
    /// The flags as the deploy request's `rollout` section; none when no flag is set.
    pub fn section(&self) -> anyhow::Result<Option<RolloutSection>> {
        let waves = match &self.waves {
            Some(text) => {
                #[derive(serde::Deserialize)]
                struct Waves {
                    waves: Vec<WaveSection>,
                }
                let parsed: Waves = toml::from_str(&format!("waves = {text}")).map_err(|e| {
                    anyhow::anyhow!(
                        "--waves is a TOML array such as '[{{hosts = 1}}, {{percent = 50}}, {{percent = 100}}]': {e}"
                    )
                })?;
                Some(parsed.waves)
            }
            None => None,
        };
        let failure_budget = self.failure_budget.as_ref().map(|text| match text.trim().parse::<u64>() {
            Ok(n) => BudgetText::Hosts(n),
            Err(_) => BudgetText::Text(text.clone()),
        });
        let section = RolloutSection {
            waves,
            max_unavailable: self.max_unavailable,
            bake_secs: self.bake_secs,
            failure_budget,
            on_failure: self.on_failure.clone(),
            progress_deadline_secs: self.progress_deadline_secs,
        };
        // Checked here too, so a typo is named before anything is sent.
        section.to_override().map_err(|e| anyhow::anyhow!("{e}"))?;
        Ok((!section.is_empty()).then_some(section))
    }
}

/// `cascade rollout …`: act on a service's current rollout.
#[derive(Subcommand)]
pub enum RolloutCommand {
    /// Open the manual wave the rollout waits at.
    Promote(Target),
    /// Stop switching hosts (and stop the gate's clock) until `resume`.
    Pause(Target),
    /// Go on after a pause; the progress deadline starts again.
    Resume(Target),
    /// End the rollout where it is: nothing switches any more, switched hosts keep the new release
    /// (`cascade rollback` restores the previous one everywhere).
    Abort(Target),
}

/// Which rollout.
#[derive(Args)]
pub struct Target {
    /// The service.
    #[arg(long)]
    service: ServiceName,
    /// The generation (default: the current one); a stale number is refused, so a late command cannot act
    /// on the next deploy.
    #[arg(long)]
    generation: Option<u64>,
}

/// Runs a `cascade rollout` subcommand.
pub async fn run(server: &str, token: &str, output: Output, command: RolloutCommand) -> anyhow::Result<ExitCode> {
    let (action, target) = match command {
        RolloutCommand::Promote(t) => ("promote", t),
        RolloutCommand::Pause(t) => ("pause", t),
        RolloutCommand::Resume(t) => ("resume", t),
        RolloutCommand::Abort(t) => ("abort", t),
    };
    let client = cascade_client::Client::new(&[server.to_string()], token)?;
    let generation = match target.generation {
        Some(g) => g,
        None => {
            let status = client.deployment(&target.service).await?;
            let desired = status.desired.ok_or_else(|| {
                anyhow::anyhow!(
                    "{} was never deployed: `cascade deploy --service {} --build N`",
                    target.service,
                    target.service
                )
            })?;
            desired.generation
        }
    };
    let desired = client.control_rollout(&target.service, generation, action).await?;
    match output {
        Output::Json => println!("{}", serde_json::to_string_pretty(&desired)?),
        Output::Human => println!(
            "{} generation {}: {}",
            desired.service,
            desired.generation,
            cascade_core::rollout::describe_stage(
                &desired.policy,
                &desired.progress,
                desired.control,
                cascade_core::UnixMillis(crate::follow::now_ms()),
            )
        ),
    }
    Ok(ExitCode::SUCCESS)
}
