//! `scanloop migrate`: the explicit schema step, run by the devstack scripts, the tests' CI, the
//! compose init service and the Kubernetes Job alike. Safe to run again at any time.

use std::time::Duration;

use scanloop_config::Infra;
use scanloop_storage::Migration;

/// The services, each with its own keyspace (`scanloop_<service>`) and event topic.
pub const SERVICES: &[&str] = &["activation", "membership", "referral", "payouts"];

#[derive(clap::Args)]
pub struct Args {
    /// Services to migrate (default: all four).
    #[arg(long, value_delimiter = ',', default_values_t = SERVICES.iter().map(|s| s.to_string()))]
    services: Vec<String>,
    /// Keyspace name prefix: keyspaces are `<prefix>_<service>`.
    #[arg(long, env = "SCANLOOP_KEYSPACE_PREFIX", default_value = "scanloop")]
    keyspace_prefix: String,
    /// Appended to CREATE KEYSPACE (for ScyllaDB: "AND tablets = {'enabled': false}").
    #[arg(long, env = "SCANLOOP_KEYSPACE_OPTIONS", default_value = "")]
    keyspace_options: String,
    /// Do not create Kafka topics.
    #[arg(long)]
    skip_topics: bool,
    /// How long to wait for the database and brokers to come up.
    #[arg(long, default_value_t = 120)]
    wait_secs: u64,
}

/// Every table a service keyspace needs: the event store's and checkpoints everywhere, plus the
/// service's own read models where the service exists already.
pub fn migrations_for(service: &str) -> Vec<&'static Migration> {
    match service {
        "activation" => scanloop_activation::migrations(),
        "membership" => scanloop_membership::migrations(),
        "referral" => scanloop_referral::migrations(),
        "payouts" => scanloop_payouts::migrations(),
        _ => scanloop_eventstore::schema::MIGRATIONS
            .iter()
            .chain(scanloop_storage::checkpoints::MIGRATIONS)
            .collect(),
    }
}

pub async fn run(infra: &Infra, args: Args) -> anyhow::Result<()> {
    for service in &args.services {
        anyhow::ensure!(
            SERVICES.contains(&service.as_str()),
            "unknown service {service:?}; known: {}",
            SERVICES.join(", ")
        );
    }
    let session =
        scanloop_storage::connect(&infra.cql_nodes, Duration::from_secs(args.wait_secs)).await?;
    for service in &args.services {
        let keyspace = format!("{}_{service}", args.keyspace_prefix);
        let applied = scanloop_storage::migrate(
            &session,
            &keyspace,
            infra.replication_factor,
            &args.keyspace_options,
            &migrations_for(service),
        )
        .await?;
        if applied.is_empty() {
            println!("keyspace {keyspace}: up to date");
        } else {
            println!("keyspace {keyspace}: applied {}", applied.join(", "));
        }
    }
    if !args.skip_topics {
        let topics: Vec<String> = args
            .services
            .iter()
            .map(|s| scanloop_bus::topics::event_topic(s))
            .collect();
        let created = scanloop_bus::topics::ensure_topics(
            &infra.kafka_brokers,
            &topics,
            i32::from(infra.topic_partitions),
            i32::from(infra.replication_factor),
        )
        .await?;
        if created.is_empty() {
            println!("topics: up to date");
        } else {
            println!("topics: created {}", created.join(", "));
        }
    }
    Ok(())
}
