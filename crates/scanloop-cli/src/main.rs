//! `scanloop`: the operator's command. Wiring only; the work is in the modules.

mod bench;
mod demo;
mod migrate;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "scanloop",
    version,
    about = "Scanloop operations: schema, topics, benchmarks"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create (idempotently) each service's keyspace and tables and the Kafka topics.
    Migrate(migrate::Args),
    /// A short narrated workload on a running cluster (what `scripts/demo` runs).
    Demo(demo::Args),
    /// Measure the storage and messaging baseline on a running cluster (e.g. the devstack).
    Bench(bench::Args),
    /// List the environment variables every Scanloop process reads, with their defaults.
    Config,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let _telemetry = scanloop_telemetry::init("scanloop-cli")?;
    let infra = scanloop_config::Infra::from_env()?;
    match cli.command {
        Command::Migrate(args) => migrate::run(&infra, args).await,
        Command::Bench(args) => bench::run(&infra, args).await,
        Command::Demo(args) => demo::run(&infra, args).await,
        Command::Config => {
            for var in scanloop_config::INFRA_VARS {
                println!("{:<30} {:<22} {}", var.name, var.default, var.meaning);
            }
            Ok(())
        }
    }
}
