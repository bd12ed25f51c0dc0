//! `sandbox-start`: what the build sandbox costs per build, against a plain `sh -c`, in one run.
//!
//! ```text
//! cargo run --release -p cascade-bench --bin sandbox-start -- --runs 200
//! ```
//!
//! Runs the worker's own `run_build` (the same bubblewrap arguments a build gets: namespaces, read-only
//! system binds, a checkout, a HOME, a mirror) with the command `true`, then the same with
//! `[sandbox] kind = "none"`, alternating so both see the same machine; prints per-build start-to-exit
//! milliseconds (mean, p50, p99) and the difference.

use cascade_worker::process::{run_build, BuildCommand, BuildExit};
use cascade_worker::sandbox::{Network, SandboxConfig, SandboxKind};
use clap::Parser;
use std::time::{Duration, Instant};

#[derive(Parser)]
struct Args {
    /// Builds of each kind.
    #[arg(long, default_value_t = 200)]
    runs: usize,
}

fn summary(mut ms: Vec<f64>) -> (f64, f64, f64) {
    ms.sort_by(f64::total_cmp);
    let mean = ms.iter().sum::<f64>() / ms.len() as f64;
    let at = |q: f64| ms[((ms.len() as f64 * q) as usize).min(ms.len() - 1)];
    (mean, at(0.5), at(0.99))
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    anyhow::ensure!(args.runs >= 1, "--runs must be at least 1");
    let dir = tempfile::tempdir()?;
    let checkout = dir.path().join("src");
    let mirror = dir.path().join("mirror.git");
    std::fs::create_dir_all(&checkout)?;
    std::fs::create_dir_all(&mirror)?;
    let sandboxed = SandboxConfig::default();
    sandboxed.check(dir.path()).map_err(|e| anyhow::anyhow!(e))?;
    let plain = SandboxConfig { kind: SandboxKind::None, ..SandboxConfig::default() };
    let command = BuildCommand {
        script: "true".into(),
        dir: checkout.clone(),
        scratch: dir.path().join("home"),
        env: Vec::new(),
        timeout: Duration::from_secs(30),
        network: Network::None,
        read_only: vec![mirror],
    };
    let log = dir.path().join("build.log");
    let (_stop_tx, stop) = tokio::sync::watch::channel(None);
    let (mut with, mut without) = (Vec::new(), Vec::new());
    for _ in 0..args.runs {
        for (config, into) in [(&sandboxed, &mut with), (&plain, &mut without)] {
            let started = Instant::now();
            let exit = run_build(&command, config, &log, stop.clone()).await?;
            anyhow::ensure!(exit == BuildExit::Success, "a build of `true` ended {exit:?}");
            into.push(started.elapsed().as_secs_f64() * 1e3);
        }
    }
    let (wm, wp50, wp99) = summary(with);
    let (pm, pp50, pp99) = summary(without);
    println!("{} builds of `true` each, alternating", args.runs);
    println!("  bubblewrap sandbox: mean {wm:.2} ms, p50 {wp50:.2} ms, p99 {wp99:.2} ms");
    println!("  plain sh -c:        mean {pm:.2} ms, p50 {pp50:.2} ms, p99 {pp99:.2} ms");
    println!("  sandbox cost per build: {:.2} ms (p50 {:.2} ms)", wm - pm, wp50 - pp50);
    Ok(())
}
