//! The timers' tables, applied by `scanloop migrate` in every keyspace whose service schedules
//! timers (the service's `migrations()` lists them).

use scanloop_storage::Migration;

pub const COMPONENT: &str = "timers";
/// The schema version this build of the timers needs.
pub const SCHEMA_VERSION: i32 = scanloop_storage::latest_version(MIGRATIONS);

pub const MIGRATIONS: &[Migration] = &[
    Migration {
        component: COMPONENT,
        version: 1,
        description: "due items in hourly buckets per shard, a bucket index and a cursor per shard",
        statements: &[
            // One partition per shard and hour of firing time. `fire_at` is when the runner may take
            // the item: its due time, or the scheduling time for an item scheduled late. Deleted
            // items' tombstones are only read while the runner's cursor has not passed them; a
            // tombstone lost to compaction before repair can only make an item fire twice, which the
            // handlers tolerate.
            "CREATE TABLE IF NOT EXISTS {ks}.timers (\
         shard int, bucket bigint, fire_at timestamp, stream_id text, key text, \
         due_at timestamp, kind text, brand_id text, \
         PRIMARY KEY ((shard, bucket), fire_at, stream_id, key)) \
         WITH gc_grace_seconds = 86400",
            // The buckets that ever held an item, so a runner that was away for a year (or a test
            // that moves the clock by one) reads the non-empty buckets only. Never deleted: one tiny
            // row per shard and hour at most, and rows behind the cursor are never read.
            "CREATE TABLE IF NOT EXISTS {ks}.timer_buckets (\
         shard int, bucket bigint, PRIMARY KEY ((shard), bucket))",
            // Every item of the shard firing before `position` has been handled. Moves forward only
            // (a conditional update), whichever runner writes it.
            "CREATE TABLE IF NOT EXISTS {ks}.timer_cursor (shard int PRIMARY KEY, position timestamp)",
        ],
    },
    Migration {
        component: COMPONENT,
        version: 2,
        description: "cursors moved by plain writes ordered by their position",
        statements: &[
            // Every item of the shard firing before `position` has been handled. Written
            // `USING TIMESTAMP <position in µs>`, never conditionally: the furthest position wins
            // whichever runner writes last, and the timestamp is never ahead of the clock (ScyllaDB
            // refuses those). Replaces `timer_cursor` (moved by conditional updates), which is read
            // only while a shard has no position here yet.
            "CREATE TABLE IF NOT EXISTS {ks}.timer_positions (shard int PRIMARY KEY, position timestamp)",
        ],
    },
    Migration {
        component: COMPONENT,
        version: 3,
        description: "cursors ordered by their position in milliseconds, far below any clock",
        statements: &[
            // Every item of the shard firing before `position` has been handled. Written
            // `USING TIMESTAMP <position in ms>`, never conditionally: the furthest position wins
            // whichever runner writes last (on equal timestamps the greater value wins, and that
            // is the further position too). `timer_positions` carried the position in µs, which
            // a service whose clock runs ahead (a test's, a skewed host's) pushed past the 3 days
            // ScyllaDB accepts; its rows, and `timer_cursor`'s, are read only while a shard has
            // no position here yet.
            "CREATE TABLE IF NOT EXISTS {ks}.timer_watermarks (shard int PRIMARY KEY, position timestamp)",
        ],
    },
];
