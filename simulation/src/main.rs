//! `cargo run -p cascade-simulation -- --seeds N | --seed N`: the cluster simulation's command line.
//!
//! `--seeds N` runs seeds `--from`..`--from + N` (stopping early at `--budget-secs` of wall-clock time) and
//! stops at the first failure, printing its seed and the last events of its trace; `--seed N` replays one
//! seed exactly (`--trace` prints every event). Build with `RUSTFLAGS="--cfg tokio_unstable"` for exact
//! replays (scripts/simulate.sh does).

use cascade_simulation::cluster::scenario::Scenario;
use cascade_simulation::cluster::{run_seed, Options};
use clap::Parser;
use std::collections::BTreeMap;
use std::process::ExitCode;
use std::time::{Duration, Instant};

#[derive(Parser)]
#[command(about = "Deterministic simulation of a Cascade cluster under seeded faults")]
struct Cli {
    /// Run this many seeds.
    #[arg(long, conflicts_with = "seed")]
    seeds: Option<u64>,
    /// First seed of a `--seeds` run.
    #[arg(long, default_value_t = 0)]
    from: u64,
    /// Replay exactly this seed.
    #[arg(long)]
    seed: Option<u64>,
    /// Print every event of a replayed seed.
    #[arg(long)]
    trace: bool,
    /// Stop starting new seeds after this many seconds of wall-clock time.
    #[arg(long)]
    budget_secs: Option<u64>,
    /// Run the workload without faults.
    #[arg(long)]
    no_faults: bool,
    /// Print how many faults of each kind the seeds of a `--seeds` run draw, without running them.
    #[arg(long)]
    fault_mix: bool,
    /// Events of a failing run's trace to print.
    #[arg(long, default_value_t = 40)]
    tail: usize,
    /// Simulate the cluster without region managers and host agents (as the regression seeds run).
    #[arg(long)]
    without_agents: bool,
    /// Plant the fixed bug of seed 3358 (the stores' old replication read), to find seeds that catch it.
    #[arg(long)]
    old_replication_read: bool,
    /// In a `--seeds` run, go on after a failing seed and list every one that failed.
    #[arg(long)]
    keep_going: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let options = Options {
        faults: !cli.no_faults,
        agents: !cli.without_agents,
        replication_reads_purged_ranges: cli.old_replication_read,
        ..Options::default()
    };
    if !cfg!(tokio_unstable) {
        eprintln!("note: built without --cfg tokio_unstable: tokio's scheduler is not seeded, replays may differ");
    }
    if let Some(seed) = cli.seed {
        let started = Instant::now();
        let outcome = run_seed(seed, &options);
        let tail = if cli.trace { usize::MAX } else { cli.tail };
        print!("{}", outcome.report(tail));
        println!(
            "{} steps, {:.1} s simulated in {:.2} s, {:?}",
            outcome.steps,
            outcome.sim_time.as_secs_f64(),
            started.elapsed().as_secs_f64(),
            outcome.stats
        );
        return if outcome.passed() { ExitCode::SUCCESS } else { ExitCode::FAILURE };
    }
    let count = cli.seeds.unwrap_or(100);
    if cli.fault_mix {
        print!("{}", fault_mix(cli.from, count));
        return ExitCode::SUCCESS;
    }
    let budget = cli.budget_secs.map(Duration::from_secs);
    let started = Instant::now();
    let mut ran = 0u64;
    let mut simulated = Duration::ZERO;
    let mut failed = Vec::new();
    for seed in cli.from..cli.from.saturating_add(count) {
        if budget.is_some_and(|b| started.elapsed() >= b) {
            println!("wall-clock budget of {}s spent", budget.map_or(0, |b| b.as_secs()));
            break;
        }
        let outcome = run_seed(seed, &options);
        ran += 1;
        simulated += outcome.sim_time;
        if !outcome.passed() {
            print!("{}", outcome.report(cli.tail));
            if !cli.keep_going {
                println!("{ran} seeds run, 1 failed");
                return ExitCode::FAILURE;
            }
            failed.push(seed);
        }
    }
    if !failed.is_empty() {
        println!("{ran} seeds run, {} failed: {failed:?}", failed.len());
        return ExitCode::FAILURE;
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "{ran} seeds passed in {secs:.1} s ({:.2} seeds/s, {:.0} s simulated, {:.0}x real time)",
        ran as f64 / secs.max(1e-9),
        simulated.as_secs_f64(),
        simulated.as_secs_f64() / secs.max(1e-9)
    );
    ExitCode::SUCCESS
}

/// Faults per kind over seeds `from..from + count`, as the docs quote it (the plan is drawn up front, so
/// this needs no run).
fn fault_mix(from: u64, count: u64) -> String {
    let mut kinds: BTreeMap<String, u64> = BTreeMap::new();
    let mut total = 0u64;
    for seed in from..from.saturating_add(count) {
        for planned in Scenario::generate(seed, true).faults {
            let debug = format!("{:?}", planned.fault);
            let kind = debug.split([' ', '{']).next().unwrap_or("?").to_string();
            *kinds.entry(kind).or_default() += 1;
            total += 1;
        }
    }
    let mut out =
        format!("{count} seeds from {from}: {total} faults ({:.1} a seed)\n", total as f64 / count.max(1) as f64);
    for (kind, n) in kinds {
        out.push_str(&format!("  {kind:<12} {n:>6}  {:>5.1} %\n", 100.0 * n as f64 / total.max(1) as f64));
    }
    out
}
