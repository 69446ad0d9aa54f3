//! The activation service's read models, applied by `scanloop migrate`.

use scanloop_storage::Migration;

pub const COMPONENT: &str = "activation";
pub const SCHEMA_VERSION: i32 = 1;

pub const MIGRATIONS: &[Migration] = &[Migration {
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
}];
