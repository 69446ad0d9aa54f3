//! The payouts service's tables, applied by `scanloop migrate`.
//!
//! Most rows keep a protobuf message in a blob (the API's own message: a commission, a batch, a
//! line): the projection reads, changes and writes it back, and the API returns it as stored.
//! Events of one stream are applied in order by one consumer lane, and the consumer drops an
//! event it has applied before, so a plain overwrite is right.

use scanloop_storage::Migration;

pub const COMPONENT: &str = "payouts";

pub const MIGRATIONS: &[Migration] = &[
    Migration {
        component: COMPONENT,
        version: 1,
        description: "payouts directory, commissions, settlement work lists, ledger, batches",
        statements: &[
            // Which sale stream an attribution accrued on (a revocation names only the attribution).
            "CREATE TABLE IF NOT EXISTS {ks}.sale_of_attribution (\
             brand_id text, attribution_id text, sale_stream_id text, \
             PRIMARY KEY ((brand_id, attribution_id)))",
            // Commissions by sale (every level of one sale in one partition).
            "CREATE TABLE IF NOT EXISTS {ks}.commissions (\
             brand_id text, sale_stream_id text, commission_id text, commission blob, \
             PRIMARY KEY ((brand_id, sale_stream_id), commission_id))",
            // The same, by beneficiary, newest first.
            "CREATE TABLE IF NOT EXISTS {ks}.commissions_by_beneficiary (\
             brand_id text, beneficiary text, accrued_at timestamp, commission_id text, \
             sale_stream_id text, commission blob, \
             PRIMARY KEY ((brand_id, beneficiary), accrued_at, commission_id)) \
             WITH CLUSTERING ORDER BY (accrued_at DESC, commission_id ASC)",
            // What settlement can take: vested commissions and owed claw-backs, spread over shards.
            "CREATE TABLE IF NOT EXISTS {ks}.settleable (\
             brand_id text, shard int, beneficiary text, item_id text, sale_stream_id text, \
             commission_id text, clawback_id text, amount_fen bigint, due_at timestamp, \
             PRIMARY KEY ((brand_id, shard), beneficiary, item_id))",
            // What a batch settled and netted (a resumed run recounts them).
            "CREATE TABLE IF NOT EXISTS {ks}.batch_items (\
             brand_id text, batch_id text, beneficiary text, item_id text, sale_stream_id text, \
             commission_id text, clawback_id text, amount_fen bigint, \
             PRIMARY KEY ((brand_id, batch_id), beneficiary, item_id))",
            // The ledger: one row per side of each posting; an account's balance is the sum of its
            // partition (debits positive, credits negative).
            "CREATE TABLE IF NOT EXISTS {ks}.ledger_entries (\
             brand_id text, account text, at timestamp, event_id text, seq int, \
             amount_fen bigint, counterpart text, event_type text, commission_id text, \
             batch_id text, \
             PRIMARY KEY ((brand_id, account), at, event_id, seq))",
            "CREATE TABLE IF NOT EXISTS {ks}.ledger_accounts (\
             brand_id text, account text, \
             PRIMARY KEY ((brand_id), account))",
            // Events whose postings were written (counts postings once for the ledger check).
            "CREATE TABLE IF NOT EXISTS {ks}.ledger_events (\
             brand_id text, event_id text, postings int, \
             PRIMARY KEY ((brand_id), event_id))",
            "CREATE TABLE IF NOT EXISTS {ks}.settlements (\
             brand_id text, batch_id text, summary blob, \
             PRIMARY KEY ((brand_id), batch_id))",
            "CREATE TABLE IF NOT EXISTS {ks}.paid_lines (\
             brand_id text, batch_id text, beneficiary text, \
             PRIMARY KEY ((brand_id, batch_id), beneficiary))",
            "CREATE TABLE IF NOT EXISTS {ks}.payout_lines (\
             brand_id text, batch_id text, beneficiary text, line blob, \
             PRIMARY KEY ((brand_id, batch_id), beneficiary))",
        ],
    },
    Migration {
        component: COMPONENT,
        version: 2,
        description: "receivables: claw-backs owed or written off (ListReceivables)",
        statements: &[
            // Claw-backs not netted: open, or written off by finance (a brand holds few).
            "CREATE TABLE IF NOT EXISTS {ks}.receivables (\
             brand_id text, clawback_id text, receivable blob, \
             PRIMARY KEY ((brand_id), clawback_id))",
        ],
    },
];
