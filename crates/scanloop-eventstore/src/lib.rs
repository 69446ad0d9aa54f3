//! The event store: each aggregate is a stream of events in ScyllaDB/Cassandra, published to
//! Kafka in version order without a dual-write hole.
//!
//! - [`store::EventStore`]: append with optimistic concurrency (one conditional batch,
//!   `IF NOT EXISTS` on the next versions, in the stream's partition), load, snapshots.
//! - [`outbox::Outbox`]: append *and* publish: a pending marker is recorded before the append
//!   (group-committed with concurrent appends'), the command is acknowledged once the append
//!   is durable, and in the background the stream's unpublished range is published in order
//!   with the idempotent producer and the marker is retired (range deletes, [`retire`]); the
//!   stream's published version is recorded by its next append. [`outbox::Sweeper`]
//!   republishes ranges whose markers were left behind by a crash.
//! - [`aggregate`]: pure `decide`/`apply` aggregates and a repository that runs a command
//!   against a stream with retry on concurrency conflicts.
//!
//! Per stream, events reach Kafka in order, possibly duplicated, never lost.

pub mod aggregate;
mod domain_events;
pub mod event;
pub mod group_commit;
mod metrics;
pub mod outbox;
pub mod projection;
mod publication;
pub mod requests;
mod retire;
pub mod schema;
pub mod store;

pub use aggregate::{
    Aggregate, DomainEvent, ExecuteError, Executed, Prepared, Rejection, Repository,
    from_snapshot_json, snapshot_json,
};
pub use event::{AppendMeta, NewEvent, RecordedEvent, RequestKey};
pub use outbox::{Appended, Outbox, Sweeper};
pub use projection::{Projection, Projector};
pub use publication::Publication;
pub use store::{AppendError, Claim, EventStore, Snapshot};
