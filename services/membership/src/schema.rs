//! The membership service's read models, applied by `scanloop migrate`.

use scanloop_storage::Migration;

pub const COMPONENT: &str = "membership";
pub const SCHEMA_VERSION: i32 = scanloop_storage::latest_version(MIGRATIONS);

pub const MIGRATIONS: &[Migration] = &[Migration {
    component: COMPONENT,
    version: 1,
    description: "points ledger pages, KOC leaderboard",
    statements: &[
        // One row per ledger entry, newest first; the balance is the sum of `points`.
        "CREATE TABLE IF NOT EXISTS {ks}.points_ledger (\
             brand_id text, member_id text, version bigint, points bigint, kind text, \
             reason text, at timestamp, \
             PRIMARY KEY ((brand_id, member_id), version)) \
             WITH CLUSTERING ORDER BY (version DESC)",
        // Leaderboard per brand ("" region) and per region, highest score first. A member's
        // current entry is found through leaderboard_members, so an update can remove the
        // row of the old score.
        "CREATE TABLE IF NOT EXISTS {ks}.leaderboard (\
             brand_id text, region text, koc_score bigint, member_id text, display_name text, \
             tier text, \
             PRIMARY KEY ((brand_id, region), koc_score, member_id)) \
             WITH CLUSTERING ORDER BY (koc_score DESC, member_id ASC)",
        "CREATE TABLE IF NOT EXISTS {ks}.leaderboard_members (\
             brand_id text, member_id text, region text, koc_score bigint, display_name text, \
             tier text, version bigint, \
             PRIMARY KEY ((brand_id, member_id)))",
    ],
}];
