//! The membership service: buyers become members when they activate a warranty; identities,
//! points ledger, engagement, KOC scoring and tiers. Layout: `domain` (pure rules), `app`
//! (command handling), `reaction` (activation events), `projections` (read models), `grpc`
//! (API mapping), `jobs` (standing changes on time), `server` (wiring), `main.rs` (process).

pub mod access;
pub mod app;
pub mod config;
pub mod domain;
pub mod grpc;
pub mod jobs;
pub mod projections;
pub mod reaction;
pub mod schema;
pub mod server;

/// Everything `scanloop migrate` must apply to this service's keyspace.
pub fn migrations() -> Vec<&'static scanloop_storage::Migration> {
    scanloop_eventstore::schema::MIGRATIONS
        .iter()
        .chain(scanloop_storage::checkpoints::MIGRATIONS)
        .chain(scanloop_timers::schema::MIGRATIONS)
        .chain(schema::MIGRATIONS)
        .collect()
}
