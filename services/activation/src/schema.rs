//! The activation service's read models, applied by `scanloop migrate`.

use scanloop_storage::Migration;

pub const COMPONENT: &str = "activation";
pub const SCHEMA_VERSION: i32 = scanloop_storage::latest_version(MIGRATIONS);

pub const MIGRATIONS: &[Migration] = &[
    Migration {
        component: COMPONENT,
        version: 1,
        description: "warranty read models: by code, by buyer, by device serial",
        statements: &[
            "CREATE TABLE IF NOT EXISTS {ks}.warranties (\
             brand_id text, batch_id uuid, serial bigint, sku text, \
             product_model text, status int, buyer_kind text, buyer_value text, \
             channel_kind int, channel_id text, amount_fen bigint, purchased_at timestamp, \
             activated_at timestamp, ends_at timestamp, extended_months int, \
             referral_token text, device_serial text, voided_at timestamp, void_reason text, \
             version bigint, \
             PRIMARY KEY ((brand_id, batch_id, serial)))",
            "CREATE TABLE IF NOT EXISTS {ks}.warranties_by_buyer (\
             brand_id text, buyer text, activated_at timestamp, batch_id uuid, serial bigint, \
             PRIMARY KEY ((brand_id, buyer), activated_at, batch_id, serial)) \
             WITH CLUSTERING ORDER BY (activated_at DESC, batch_id ASC, serial ASC)",
            "CREATE TABLE IF NOT EXISTS {ks}.warranties_by_device (\
             brand_id text, device_serial text, batch_id uuid, serial bigint, \
             PRIMARY KEY ((brand_id, device_serial)))",
        ],
    },
    Migration {
        component: COMPONENT,
        version: 2,
        // Version 1 kept one row per device serial, so a second code given the same serial hid
        // the first. Its rows cannot be carried over (they lost that history): the table is
        // recreated, and a read model is rebuilt by replaying the topic under a new group. Streams
        // are brand-scoped from this version (`batch-<brand>-…`, `warranty-<brand>-…`).
        description: "warranties_by_device: one row per (device serial, code), device serials in \
                  upper case",
        statements: &[
            "DROP TABLE IF EXISTS {ks}.warranties_by_device",
            "CREATE TABLE IF NOT EXISTS {ks}.warranties_by_device (\
             brand_id text, device_serial text, batch_id uuid, serial bigint, \
             activated_at timestamp, \
             PRIMARY KEY ((brand_id, device_serial), batch_id, serial))",
        ],
    },
    Migration {
        component: COMPONENT,
        version: 3,
        // Rows projected before it read as 0 refunded (no refund existed before this version).
        description: "warranties.refunded_fen: all refunds of the current sale (RefundPurchase)",
        statements: &["ALTER TABLE {ks}.warranties ADD refunded_fen bigint"],
    },
];
