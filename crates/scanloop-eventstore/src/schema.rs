//! The event store's tables, applied by `scanloop migrate` (never at service start-up).

use scanloop_storage::Migration;

pub const COMPONENT: &str = "eventstore";
/// The schema version this build of the event store needs.
pub const SCHEMA_VERSION: i32 = scanloop_storage::latest_version(MIGRATIONS);

pub const MIGRATIONS: &[Migration] = &[
    Migration {
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
    },
    Migration {
        component: COMPONENT,
        version: 2,
        description: "outbox markers in time buckets, with a sweep cursor",
        statements: &[
            // Markers in 10-second buckets per shard: the sweeper reads only the buckets since its
            // cursor, so the tombstones of deleted markers in older buckets are never read again
            // (one partition per shard kept every tombstone in the sweeper's path until compaction).
            "CREATE TABLE IF NOT EXISTS {ks}.outbox_pending (\
             shard int, bucket bigint, created_at timestamp, stream_id text, \
             first_version bigint, append_id uuid, \
             PRIMARY KEY ((shard, bucket), created_at, stream_id, first_version, append_id)) \
             WITH gc_grace_seconds = 600",
            "CREATE TABLE IF NOT EXISTS {ks}.outbox_sweep_cursor (shard int PRIMARY KEY, bucket bigint)",
            // Version 1's table. Nothing ran in production on it; on a development keyspace its
            // markers (if any) belong to events a later append or `publish_stream` publishes.
            "DROP TABLE IF EXISTS {ks}.outbox_markers",
        ],
    },
    Migration {
        component: COMPONENT,
        version: 3,
        description: "request ids and command fingerprints with events; request log in snapshots",
        statements: &[
            // The command an append answered, on each of its events: written in the append's
            // conditional batch, so "this request id was used, for this command" is exactly as
            // durable as the events. Internal: never part of the published envelope.
            "ALTER TABLE {ks}.events ADD request_id text",
            "ALTER TABLE {ks}.events ADD request_fingerprint blob",
            "ALTER TABLE {ks}.snapshots ADD requests blob",
            // Brand-wide index of recent request ids, so an id reused for a different command on
            // another stream is refused too. Plain writes with a TTL of the retention (7 days).
            "CREATE TABLE IF NOT EXISTS {ks}.request_ids (\
             brand_id text, request_id text, fingerprint blob, stream_id text, \
             PRIMARY KEY ((brand_id, request_id))) \
             WITH default_time_to_live = 604800 AND gc_grace_seconds = 3600",
        ],
    },
    Migration {
        component: COMPONENT,
        version: 4,
        description: "who caused each event (the actor in its envelope)",
        statements: &["ALTER TABLE {ks}.events ADD actor text"],
    },
    Migration {
        component: COMPONENT,
        version: 5,
        description: "outbox markers shared by the appends of one group commit",
        statements: &[
            // One row per group-committed flush of markers, naming every append it announces
            // (stream, first version): a flush of n appends writes one row and deletes one
            // row instead of n each. Same shards, buckets and sweep cursor as `outbox_pending`,
            // which the sweeper still reads (markers of writers from before this version).
            "CREATE TABLE IF NOT EXISTS {ks}.outbox_flushes (\
             shard int, bucket bigint, created_at timestamp, flush_id uuid, \
             appends frozen<list<frozen<tuple<text, bigint>>>>, \
             PRIMARY KEY ((shard, bucket), created_at, flush_id)) \
             WITH gc_grace_seconds = 600",
        ],
    },
    Migration {
        component: COMPONENT,
        version: 6,
        description: "outbox flush rows numbered per writer, retired by range deletes",
        statements: &[
            // A writer files its flush rows under its id in one shard, numbered by `seq`: in each
            // bucket they sit side by side, so the writer deletes a run of finished flushes with
            // one range delete instead of a tombstone per row. Same shards, buckets and sweep
            // cursor as before; the sweeper still reads `outbox_flushes` and `outbox_pending`
            // (rows of writers from before this version).
            "CREATE TABLE IF NOT EXISTS {ks}.outbox_writer_flushes (\
             shard int, bucket bigint, writer_id uuid, seq bigint, created_at timestamp, \
             appends frozen<list<frozen<tuple<text, bigint>>>>, \
             PRIMARY KEY ((shard, bucket), writer_id, seq)) \
             WITH gc_grace_seconds = 600",
        ],
    },
    Migration {
        component: COMPONENT,
        version: 7,
        description: "request ids claimed brand-wide by a conditional insert before a command runs",
        statements: &[
            // The first use of a request id in a brand claims it, with its command's fingerprint,
            // before the command decides anything (`IF NOT EXISTS`, only ever written so): two
            // concurrent first uses for different commands on different streams cannot both
            // pass, and an id whose command decided nothing is bound to it all the same. Kept
            // for the retention (7 days).
            "CREATE TABLE IF NOT EXISTS {ks}.request_claims (\
             brand_id text, request_id text, fingerprint blob, stream_id text, \
             PRIMARY KEY ((brand_id, request_id))) \
             WITH default_time_to_live = 604800 AND gc_grace_seconds = 3600",
        ],
    },
];
