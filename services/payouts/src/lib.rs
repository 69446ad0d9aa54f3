//! The payouts service: commission plans with two levels, accrual of commissions on attributed
//! sales, vesting after the return window, reversal and claw-back on returns and refunds,
//! settlement batches and a double-entry ledger. Layout: `domain` (pure rules), `app` (command
//! handling), `reaction` (referral's and activation's events), `jobs` (vesting on time),
//! `projections` (read models), `grpc` (API mapping), `server` (wiring), `main.rs` (process).

pub mod access;
pub mod app;
pub mod config;
pub mod domain;
pub mod grpc;
pub mod jobs;
pub mod projections;
pub mod reaction;
pub mod reconcile;
pub mod schema;
pub mod server;

/// Everything `scanloop migrate` must apply to this service's keyspace.
pub fn migrations() -> Vec<&'static scanloop_storage::Migration> {
    scanloop_eventstore::schema::MIGRATIONS
        .iter()
        .chain(scanloop_storage::checkpoints::MIGRATIONS)
        .chain(scanloop_timers::schema::MIGRATIONS)
        .chain(crate::schema::MIGRATIONS)
        .collect()
}
