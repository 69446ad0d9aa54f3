//! The activation service: warranty code batches, verification, scans, activation, extension
//! and returns. Layout: `domain` (pure rules), `app` (command handling), `projections` (read
//! models), `grpc` (API mapping), `reaction` (referral events), `server` (wiring the parts
//! together), `main.rs` (process).

pub mod access;
pub mod app;
pub mod config;
pub mod domain;
pub mod grpc;
pub mod projections;
pub mod reaction;
pub mod schema;
pub mod server;

/// Everything `scanloop migrate` must apply to this service's keyspace.
pub fn migrations() -> Vec<&'static scanloop_storage::Migration> {
    scanloop_eventstore::schema::MIGRATIONS
        .iter()
        .chain(scanloop_storage::checkpoints::MIGRATIONS)
        .chain(schema::MIGRATIONS)
        .collect()
}
