//! The event store's tables, applied by `scanloop migrate` (never at service start-up).

use scanloop_storage::Migration;

pub const COMPONENT: &str = "eventstore";
/// The schema version this build of the event store needs.
pub const SCHEMA_VERSION: i32 = 1;

pub const MIGRATIONS: &[Migration] = &[Migration {
    component: COMPONENT,
    version: 1,
    description: "events, snapshots, outbox markers",
    statements: &[
        // One partition per stream, clustered by version. `published_version` (static: one
        // value per stream) is how far the stream has reached Kafka.
        "CREATE TABLE IF NOT EXISTS {ks}.events (\
             stream_id text, version bigint, event_id uuid, event_type text, \
             schema_version int, brand_id text, payload blob, occurred_at timestamp, \
             recorded_at timestamp, correlation_id text, causation_id text, traceparent text, \
             published_version bigint static, \
             PRIMARY KEY ((stream_id), version)) WITH CLUSTERING ORDER BY (version ASC)",
        "CREATE TABLE IF NOT EXISTS {ks}.snapshots (\
             stream_id text PRIMARY KEY, version bigint, state_type text, state blob, \
             taken_at timestamp)",
        // Pending-publication markers, spread over a fixed number of shards so the sweeper can
        // find old ones without scanning every stream. Markers live seconds, so tombstones can
        // be purged soon; a resurrected marker only causes a harmless extra sweep.
        "CREATE TABLE IF NOT EXISTS {ks}.outbox_markers (\
             shard int, created_at timestamp, stream_id text, first_version bigint, \
             append_id uuid, \
             PRIMARY KEY ((shard), created_at, stream_id, first_version, append_id)) \
             WITH gc_grace_seconds = 600",
    ],
}];
