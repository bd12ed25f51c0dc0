//! The one `cascade` binary: a thin layer of subcommands over the library crates.

mod commands;

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
    /// Run a Raft node (voter or learner) from a TOML config file.
    Node {
        /// The node's config file.
        #[arg(long)]
        config: PathBuf,
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
    },
    /// Deploy a service's previous good build again.
    Rollback {
        /// The service.
        #[arg(long)]
        service: cascade_core::ServiceName,
    },
    /// Manage cluster membership.
    #[command(subcommand)]
    Cluster(commands::ClusterCommand),
    /// Submit, list, show and cancel builds.
    #[command(subcommand)]
    Build(commands::BuildCommand),
    /// The cluster and the build queue at a glance.
    Status,
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
            Command::Node { config } => commands::run_node(&config).await,
            Command::Worker { config } => commands::run_worker(&config).await,
            Command::Agent(cmd) => commands::agent(cmd).await,
            Command::Certs(cmd) => commands::certs(cmd),
            Command::Deploy { service, build } => {
                commands::deploy(&cli.server, &cli.token, cli.output, service, Some(build)).await
            }
            Command::Rollback { service } => commands::deploy(&cli.server, &cli.token, cli.output, service, None).await,
            Command::Cluster(cmd) => commands::cluster(&cli.server, &cli.token, cli.output, cmd).await,
            Command::Build(cmd) => commands::build(&cli.server, &cli.token, cli.output, cmd).await,
            Command::Status => commands::status(&cli.server, &cli.token, cli.output).await,
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
