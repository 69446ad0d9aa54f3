//! The referral service's tables, applied by `scanloop migrate`.
//!
//! Two kinds: what this service knows of other services' facts and of clicks (written by its
//! reactions and by ResolveLink: the "directory"), and read models projected from its own topic.
//! Read-model rows that several events of one stream change are written `USING TIMESTAMP
//! <stream version>`, so a redelivered or reordered older event never overwrites a newer one.

use scanloop_storage::Migration;

pub const COMPONENT: &str = "referral";
pub const SCHEMA_VERSION: i32 = scanloop_storage::latest_version(MIGRATIONS);

pub const MIGRATIONS: &[Migration] = &[
    Migration {
        component: COMPONENT,
        version: 1,
        description: "referral directory, click counts, fraud windows and read models",
        statements: &[
            // Members as membership announces them (registration, identities, devices).
            "CREATE TABLE IF NOT EXISTS {ks}.members (\
             brand_id text, member_id text, registered_at timestamp, display_name text, \
             identities set<text>, devices set<text>, \
             PRIMARY KEY ((brand_id, member_id)))",
            "CREATE TABLE IF NOT EXISTS {ks}.identity_owners (\
             brand_id text, identity_key text, member_id text, \
             PRIMARY KEY ((brand_id, identity_key)))",
            // Activations whose buyer membership has not announced yet; attributed when it does.
            "CREATE TABLE IF NOT EXISTS {ks}.parked_sales (\
             brand_id text, identity_key text, event_id text, envelope blob, \
             PRIMARY KEY ((brand_id, identity_key), event_id)) \
             WITH default_time_to_live = 2592000",
            // Codes activation flagged with SuspiciousScan.
            "CREATE TABLE IF NOT EXISTS {ks}.flagged_codes (\
             brand_id text, warranty_stream_id text, reason text, \
             PRIMARY KEY ((brand_id, warranty_stream_id))) \
             WITH default_time_to_live = 7776000",
            // Who activated each code (the identity), for StartAssist's ownership check.
            "CREATE TABLE IF NOT EXISTS {ks}.warranty_owners (\
             brand_id text, warranty_stream_id text, identity_key text, assists set<text>, \
             PRIMARY KEY ((brand_id, warranty_stream_id)))",
            // Every token ever issued, across brands: tells "another brand's" from "unknown".
            "CREATE TABLE IF NOT EXISTS {ks}.link_tokens (\
             link_token text, brand_id text, PRIMARY KEY (link_token))",
            // A visitor's last click on a link (visitor = keyed hash of identity or visitor key).
            "CREATE TABLE IF NOT EXISTS {ks}.clicks (\
             brand_id text, link_token text, visitor text, last_click timestamp, \
             counted_at timestamp, \
             PRIMARY KEY ((brand_id, link_token, visitor))) \
             WITH default_time_to_live = 31536000",
            // Attributions per referrer and per store by day, for velocity and burst checks.
            "CREATE TABLE IF NOT EXISTS {ks}.referrer_sales (\
             brand_id text, referrer text, day text, at timestamp, attribution_id text, \
             PRIMARY KEY ((brand_id, referrer, day), at, attribution_id)) \
             WITH default_time_to_live = 259200",
            "CREATE TABLE IF NOT EXISTS {ks}.store_sales (\
             brand_id text, store_id text, day text, at timestamp, attribution_id text, \
             PRIMARY KEY ((brand_id, store_id, day), at, attribution_id)) \
             WITH default_time_to_live = 259200",
            // Read models.
            "CREATE TABLE IF NOT EXISTS {ks}.links (\
             brand_id text, link_token text, member_id text, sku text, campaign_id text, url text, \
             created_at timestamp, revoked boolean, \
             PRIMARY KEY ((brand_id, link_token)))",
            "CREATE TABLE IF NOT EXISTS {ks}.links_by_member (\
             brand_id text, member_id text, created_at timestamp, link_token text, \
             PRIMARY KEY ((brand_id, member_id), created_at, link_token)) \
             WITH CLUSTERING ORDER BY (created_at DESC, link_token ASC)",
            "CREATE TABLE IF NOT EXISTS {ks}.link_shares (\
             brand_id text, link_token text, version bigint, channel int, \
             PRIMARY KEY ((brand_id, link_token), version))",
            "CREATE TABLE IF NOT EXISTS {ks}.referrals (\
             brand_id text, attribution_id text, referrer text, activated_at timestamp, \
             warranty_stream_id text, \
             PRIMARY KEY ((brand_id, attribution_id)))",
            "CREATE TABLE IF NOT EXISTS {ks}.referrals_by_referrer (\
             brand_id text, referrer text, activated_at timestamp, attribution_id text, \
             status int, link_token text, level2 text, buyer text, sku text, amount_fen bigint, \
             purchased_at timestamp, store_id text, rejection_reason int, \
             hold_reasons list<int>, detail text, decided_at timestamp, \
             PRIMARY KEY ((brand_id, referrer), activated_at, attribution_id)) \
             WITH CLUSTERING ORDER BY (activated_at DESC, attribution_id ASC)",
            "CREATE TABLE IF NOT EXISTS {ks}.held (\
             brand_id text, activated_at timestamp, attribution_id text, referrer text, \
             PRIMARY KEY ((brand_id), activated_at, attribution_id))",
            "CREATE TABLE IF NOT EXISTS {ks}.tree_parents (\
             brand_id text, member_id text, parent text, \
             PRIMARY KEY ((brand_id, member_id)))",
            "CREATE TABLE IF NOT EXISTS {ks}.tree_children (\
             brand_id text, parent text, level int, member_id text, \
             PRIMARY KEY ((brand_id, parent, level), member_id))",
            // Funnel counters per scope (a member id, or "" for the brand) and SKU; store figures.
            "CREATE TABLE IF NOT EXISTS {ks}.funnel (\
             brand_id text, scope text, sku text, clicks counter, visitors counter, \
             shares counter, attributed counter, held counter, rejected counter, \
             PRIMARY KEY ((brand_id, scope), sku))",
            "CREATE TABLE IF NOT EXISTS {ks}.store_figures (\
             brand_id text, store_id text, sales counter, amount_fen counter, \
             credited counter, \
             PRIMARY KEY ((brand_id, store_id)))",
            // Events already counted into the counters above (counters cannot be made idempotent).
            "CREATE TABLE IF NOT EXISTS {ks}.counted_events (\
             brand_id text, event_id text, PRIMARY KEY ((brand_id, event_id)))",
        ],
    },
    Migration {
        component: COMPONENT,
        version: 2,
        // A revoked attribution takes its sale out of the store figures, including the store's
        // credit, which depends on who earned it. Rows projected before this version have no
        // payee until the read models are rebuilt from the topic.
        description: "referrals_by_referrer: who earned the sale (payee)",
        statements: &["ALTER TABLE {ks}.referrals_by_referrer ADD payee int"],
    },
    Migration {
        component: COMPONENT,
        version: 3,
        // A parked activation that keeps failing is retried on its own and dead-lettered on its
        // own after a few attempts, never holding back the others parked under the identity.
        description: "parked_sales: attempts and the last error of each parked activation",
        statements: &[
            "ALTER TABLE {ks}.parked_sales ADD attempts int",
            "ALTER TABLE {ks}.parked_sales ADD last_error text",
        ],
    },
];
