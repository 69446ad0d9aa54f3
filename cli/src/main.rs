//! `scanloop`: the operator's command. Wiring only; the work is in the modules.

mod access_table;
mod batch_issue;
mod bench;
mod cluster;
mod config_table;
mod credentials;
mod demo_activation;
mod demo_eventstore;
mod demo_loop;
mod events_table;
mod loadgen;
mod migrate;
mod payouts_export;
mod payouts_receivables;
mod payouts_reconcile;
mod token;
mod topic_tail;

use clap::{Parser, Subcommand};

#[global_allocator]
static ALLOCATOR: scanloop_alloc::Allocator = scanloop_alloc::Allocator;

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
    /// Short narrated workloads on a running cluster (what `scripts/demo` runs).
    #[command(subcommand)]
    Demo(Demo),
    /// Measure the storage and messaging baseline on a running cluster (e.g. the devstack).
    Bench(bench::Args),
    /// Measure the payouts service: accruals per second and their latency, and a settlement of
    /// many vested commissions (see `scripts/bench-payouts`).
    BenchPayouts(bench::payouts::Args),
    /// A realistic population driven open-loop against the running cluster (all four
    /// services), with live progress and a report: throughput, acknowledgement latency per RPC,
    /// the loop's own latency (activation → commission) and CPU per activation.
    Loadgen(loadgen::Args),
    /// List the environment variables the Scanloop processes read, by who reads them, with their
    /// defaults.
    Config {
        /// Print the Markdown reference that docs/operating.md holds.
        #[arg(long)]
        markdown: bool,
    },
    /// Payouts operations for finance.
    #[command(subcommand)]
    Payouts(Payouts),
    /// Batches of printed codes.
    #[command(subcommand)]
    Batch(Batch),
    /// Prints who may call each RPC of each service (the role table in docs/access.md).
    Access,
    /// Lists the events on each public topic with their fields (from the proto comments).
    Events {
        /// Print the Markdown field reference that docs/events.md holds.
        #[arg(long)]
        markdown: bool,
    },
    /// Signing keys and bearer tokens for the services (development, tests, the demo).
    #[command(subcommand)]
    Token(Token),
    /// Ask a service's standard gRPC health check; exits non-zero unless it is serving.
    Health {
        #[arg(long, default_value = "127.0.0.1:50051")]
        addr: String,
        /// The service name to check; empty checks the server as a whole.
        #[arg(long, default_value = "")]
        service: String,
    },
}

async fn health(addr: &str, service: String) -> anyhow::Result<()> {
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::health_client::HealthClient;
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))?
        .connect_timeout(std::time::Duration::from_secs(3))
        .timeout(std::time::Duration::from_secs(3))
        .connect()
        .await?;
    let status = HealthClient::new(channel)
        .check(HealthCheckRequest { service })
        .await?
        .into_inner()
        .status();
    anyhow::ensure!(status == ServingStatus::Serving, "{addr} is {status:?}");
    println!("{addr}: serving");
    Ok(())
}

#[derive(Subcommand)]
enum Batch {
    /// Issues a batch and streams its codes to a file for the print shop (resumable: run the
    /// same command again).
    Issue(batch_issue::IssueArgs),
}

#[derive(Subcommand)]
enum Token {
    /// A new Ed25519 signing key: `<kid>.pem` (private) and its public key added to `jwks.json`.
    Keygen(token::KeygenArgs),
    /// Prints a signed token for a subject, its brands and roles.
    Issue(token::IssueArgs),
}

#[derive(Subcommand)]
enum Payouts {
    /// Write a settlement batch as CSV (beneficiary, masked identity, yuan, reference).
    Export(payouts_export::ExportArgs),
    /// Recompute a brand's accounts and batches from its events alone and compare them with
    /// the read models; prints each difference, exits non-zero on any.
    Reconcile(payouts_reconcile::ReconcileArgs),
    /// Write a brand's receivables as CSV: open claw-backs by age, and write-offs with who and
    /// why.
    Receivables(payouts_receivables::ReceivablesArgs),
}

#[derive(Subcommand)]
enum Demo {
    /// The activation scenario against a running activation service.
    Activation {
        /// The activation service's gRPC address.
        #[arg(
            long,
            env = "SCANLOOP_ACTIVATION_ADDR",
            default_value = "127.0.0.1:50051"
        )]
        addr: String,
        /// A membership service to show the member the activation creates.
        #[arg(long, env = "SCANLOOP_MEMBERSHIP_ADDR")]
        membership_addr: Option<String>,
    },
    /// The whole growth loop for one brand against the four running services, narrated and
    /// checked step by step (what `scripts/demo` runs).
    Loop(demo_loop::Args),
    /// The event store and bus on their own: outbox, conflict, sweeper, de-duplication, DLQ.
    Eventstore,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let _telemetry = scanloop_telemetry::init("scanloop-cli")?;
    let infra = scanloop_config::Infra::from_env()?;
    match cli.command {
        Command::Migrate(args) => migrate::run(&infra, args).await,
        Command::Bench(args) => bench::run(&infra, args).await,
        Command::Loadgen(args) => loadgen::run(&infra, args).await,
        Command::BenchPayouts(args) => bench::payouts::run(&infra, args).await,
        Command::Demo(Demo::Activation {
            addr,
            membership_addr,
        }) => demo_activation::run(&addr, membership_addr.as_deref()).await,
        Command::Demo(Demo::Loop(args)) => demo_loop::run(args).await,
        Command::Demo(Demo::Eventstore) => demo_eventstore::run(&infra).await,
        Command::Payouts(Payouts::Export(args)) => payouts_export::run(args).await,
        Command::Payouts(Payouts::Receivables(args)) => payouts_receivables::run(args).await,
        Command::Payouts(Payouts::Reconcile(args)) => {
            payouts_reconcile::run(&infra.kafka_brokers, args).await
        }
        Command::Health { addr, service } => health(&addr, service).await,
        Command::Batch(Batch::Issue(args)) => batch_issue::run(args).await,
        Command::Access => {
            print!("{}", access_table::markdown());
            Ok(())
        }
        Command::Events { markdown } => {
            if markdown {
                print!("{}", events_table::markdown());
            } else {
                print!("{}", events_table::text());
            }
            Ok(())
        }
        Command::Token(Token::Keygen(args)) => token::keygen(args),
        Command::Token(Token::Issue(args)) => token::issue(args),
        Command::Config { markdown } => {
            if markdown {
                print!("{}", config_table::markdown());
            } else {
                print!("{}", config_table::text());
            }
            Ok(())
        }
    }
}
