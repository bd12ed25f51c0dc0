//! The one `cascade` binary: a thin layer of subcommands over the library crates.

mod commands;
mod demo;
mod follow;
mod rollout;

use clap::{Parser, Subcommand, ValueEnum};
use std::path::PathBuf;
use std::process::ExitCode;

/// Cascade: build a commit, deploy it to every machine.
#[derive(Parser)]
#[command(name = "cascade", version, about)]
struct Cli {
    /// Node address(es) to talk to, comma-separated (`http://host:port` or `host:port`).
    #[arg(long, env = "CASCADE_SERVER", global = true, default_value = "http://127.0.0.1:7001")]
    server: String,
    /// Bearer token.
    #[arg(long, env = "CASCADE_TOKEN", global = true, default_value = "", hide_env_values = true)]
    token: String,
    /// Output format.
    #[arg(long, value_enum, global = true, default_value = "human")]
    output: Output,
    /// Log as JSON lines instead of human-readable text.
    #[arg(long, global = true)]
    log_json: bool,
    #[command(subcommand)]
    command: Command,
}

/// How results are printed.
#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    /// For people.
    Human,
    /// For scripts.
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Run a Raft node (voter or learner) from a TOML config file; `node restore` seeds a new one from a backup.
    #[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
    Node {
        /// The node's config file.
        #[arg(long, required = true)]
        config: Option<PathBuf>,
        #[command(subcommand)]
        action: Option<NodeAction>,
    },
    /// Run a build worker from a TOML config file: claims jobs, builds them, uploads the artifacts.
    Worker {
        /// The worker's config file.
        #[arg(long)]
        config: PathBuf,
    },
    /// Run a region agent: `manager` (one per cluster of machines) or `host` (on every machine).
    #[command(subcommand)]
    Agent(commands::AgentCommand),
    /// Create a cluster CA and issue agent certificates.
    #[command(subcommand)]
    Certs(commands::CertsCommand),
    /// Deploy a succeeded build of a service to every region.
    Deploy {
        /// The service.
        #[arg(long)]
        service: cascade_core::ServiceName,
        /// The succeeded build.
        #[arg(long)]
        build: u64,
        #[command(flatten)]
        rollout: rollout::RolloutArgs,
        #[command(flatten)]
        follow: commands::FollowArgs,
    },
    /// Deploy a service's previous good build again.
    Rollback {
        /// The service.
        #[arg(long)]
        service: cascade_core::ServiceName,
        #[command(flatten)]
        follow: commands::FollowArgs,
    },
    /// Promote, pause, resume or abort a service's current rollout.
    #[command(subcommand)]
    Rollout(rollout::RolloutCommand),
    /// Manage cluster membership.
    #[command(subcommand)]
    Cluster(commands::ClusterCommand),
    /// Submit, list, show and cancel builds.
    #[command(subcommand)]
    Build(commands::BuildCommand),
    /// The cluster and the build queue at a glance; with --service, that service's deployment.
    Status {
        /// Show this service's desired version, replication and rollout per region instead.
        #[arg(long)]
        service: Option<cascade_core::ServiceName>,
    },
    /// A build's log (the same as `cascade build log`).
    Logs {
        /// Build id.
        id: u64,
        /// Only the last this many bytes.
        #[arg(long)]
        tail: Option<u64>,
    },
    /// Run a whole small Cascade on this machine (3 voters, 3 regional learners, 2 workers, a manager and
    /// hosts per region) and build the example service; Ctrl-C stops it.
    Demo(demo::DemoArgs),
}

/// `cascade node …` subcommands (offline operations on a node's data dir).
#[derive(Subcommand)]
enum NodeAction {
    /// Seed a new node's empty data dir from a `cascade cluster backup` file; its membership becomes this
    /// node and the `peers` of its config (a new cluster with the old state). Run it with the node stopped.
    Restore {
        /// The new node's config file (its data_dir must be empty or missing).
        #[arg(long)]
        config: PathBuf,
        /// The backup file.
        #[arg(long)]
        from: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_json);
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(2);
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Node { action: Some(NodeAction::Restore { config, from }), .. } => {
                commands::restore(&config, &from, cli.output).await
            }
            Command::Node { config: Some(config), action: None } => commands::run_node(&config).await,
            Command::Node { config: None, action: None } => Err(anyhow::anyhow!("cascade node needs --config FILE")),
            Command::Worker { config } => commands::run_worker(&config).await,
            Command::Agent(cmd) => commands::agent(cmd).await,
            Command::Certs(cmd) => commands::certs(cmd),
            Command::Deploy { service, build, rollout, follow } => {
                commands::deploy(&cli.server, &cli.token, cli.output, service, Some((build, rollout)), follow).await
            }
            Command::Rollout(cmd) => rollout::run(&cli.server, &cli.token, cli.output, cmd).await,
            Command::Rollback { service, follow } => {
                commands::deploy(&cli.server, &cli.token, cli.output, service, None, follow).await
            }
            Command::Cluster(cmd) => commands::cluster(&cli.server, &cli.token, cli.output, cmd).await,
            Command::Build(cmd) => commands::build(&cli.server, &cli.token, cli.output, cmd).await,
            Command::Status { service: None } => commands::status(&cli.server, &cli.token, cli.output).await,
            Command::Status { service: Some(service) } => {
                commands::service_status(&cli.server, &cli.token, cli.output, service).await
            }
            Command::Logs { id, tail } => {
                commands::build(&cli.server, &cli.token, cli.output, commands::BuildCommand::Log { id, tail }).await
            }
            Command::Demo(args) => demo::run(args).await,
        }
    });
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("CASCADE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,openraft=warn"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}
