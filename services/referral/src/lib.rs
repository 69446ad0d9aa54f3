//! The referral service: share links and cards, attribution of a friend's activation to the
//! member whose link they came through, the two-level tree, fraud review, store credit and
//! assist campaigns. Layout: `domain` (pure rules), `app` (command handling), `reaction` (other
//! services' events), `directory` (what referral knows of members, clicks and recent sales),
//! `projections` (read models), `grpc` (API mapping), `card` (QR share cards), `server`
//! (wiring), `main.rs` (process).

pub mod access;
pub mod app;
pub mod card;
pub mod config;
pub mod directory;
pub mod domain;
pub mod forest;
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
