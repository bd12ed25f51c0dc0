//! The example configs in `examples/` are what operators copy: each one must load with the real loader
//! (and pass the node's validation), so a renamed or removed field cannot leave them silently stale.

/// `examples/PATH` of the checkout being tested. Cargo sets `CARGO_MANIFEST_DIR` when it runs the test; the
/// compile-time value can name another clone whose build this binary was reused from.
fn example(path: &str) -> std::path::PathBuf {
    let manifest: std::path::PathBuf =
        std::env::var_os("CARGO_MANIFEST_DIR").map_or_else(|| env!("CARGO_MANIFEST_DIR").into(), Into::into);
    manifest.join("..").join("examples").join(path)
}

#[test]
fn every_example_config_loads() {
    for node in ["node.toml", "production/voter.toml", "production/learner.toml"] {
        let config = cascade_raft_node::NodeConfig::load(&example(node)).unwrap_or_else(|e| panic!("{node}: {e}"));
        config.validate().unwrap_or_else(|e| panic!("{node}: {e}"));
    }
    cascade_worker::WorkerConfig::load(&example("worker.toml")).expect("worker.toml");
    cascade_region_agent::manager::ManagerConfig::load(&example("production/manager.toml")).expect("manager.toml");
    cascade_region_agent::host::HostConfig::load(&example("production/host.toml")).expect("host.toml");
}

#[test]
fn systemd_units_start_the_commands_that_exist() {
    for (unit, words) in [
        ("cascade-node.service", &["node", "--config"][..]),
        ("cascade-worker.service", &["worker", "--config"]),
        ("cascade-manager.service", &["agent", "manager", "--config"]),
        ("cascade-host.service", &["agent", "host", "--config"]),
    ] {
        let text = std::fs::read_to_string(example(&format!("systemd/{unit}"))).expect(unit);
        let exec = text.lines().find_map(|l| l.strip_prefix("ExecStart=")).expect("ExecStart");
        let args: Vec<&str> = exec.split_whitespace().skip(1).collect();
        assert_eq!(&args[..words.len()], words, "{unit}: {exec}");
        // The subcommand parses: `--help` after the same words succeeds.
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_cascade"))
            .args(words.iter().filter(|w| !w.starts_with("--")))
            .arg("--help")
            .output()
            .expect("run cascade");
        assert!(out.status.success(), "{unit}: {}", String::from_utf8_lossy(&out.stderr));
    }
}
