//! What the referral service knows besides its own event streams: members as membership
//! announces them, buyers' activations waiting for their member, codes activation flagged, who
//! activated each code, every issued token, clicks, and recent sales per referrer and per store.
//! All writes are idempotent (keyed by the fact), so reactions may repeat them.

use std::collections::HashSet;
use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use scanloop_storage::DbError;
use scylla::client::session::Session;

use crate::db::Db;

/// A member as membership announced them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MemberFacts {
    pub registered_at: Option<DateTime<Utc>>,
    pub display_name: String,
    pub identities: Vec<String>,
    pub devices: Vec<String>,
}

/// An activation waiting for membership to name its buyer.
#[derive(Debug, Clone, PartialEq)]
pub struct Parked {
    pub event_id: String,
    /// The activation's envelope (empty when the row's envelope expired first).
    pub envelope: Vec<u8>,
    pub attempts: i32,
}

#[derive(Clone)]
pub struct Directory {
    db: Db,
}

const STATEMENTS: &[(&str, &str)] = &[
    (
        "register_member",
        "UPDATE {ks}.members SET registered_at = ?, display_name = ?, identities = identities + ? \
         WHERE brand_id = ? AND member_id = ?",
    ),
    (
        "add_identity",
        "UPDATE {ks}.members SET identities = identities + ? WHERE brand_id = ? AND member_id = ?",
    ),
    (
        "add_device",
        "UPDATE {ks}.members SET devices = devices + ? WHERE brand_id = ? AND member_id = ?",
    ),
    (
        "member",
        "SELECT registered_at, display_name, identities, devices FROM {ks}.members \
         WHERE brand_id = ? AND member_id = ?",
    ),
    (
        "set_owner",
        "INSERT INTO {ks}.identity_owners (brand_id, identity_key, member_id) VALUES (?, ?, ?)",
    ),
    (
        "owner",
        "SELECT member_id FROM {ks}.identity_owners WHERE brand_id = ? AND identity_key = ?",
    ),
    (
        "park",
        "INSERT INTO {ks}.parked_sales (brand_id, identity_key, event_id, envelope) \
         VALUES (?, ?, ?, ?)",
    ),
    (
        "parked",
        "SELECT event_id, envelope, attempts FROM {ks}.parked_sales \
         WHERE brand_id = ? AND identity_key = ?",
    ),
    (
        "park_failed",
        "UPDATE {ks}.parked_sales SET attempts = ?, last_error = ? \
         WHERE brand_id = ? AND identity_key = ? AND event_id = ?",
    ),
    (
        "unpark",
        "DELETE FROM {ks}.parked_sales WHERE brand_id = ? AND identity_key = ? AND event_id = ?",
    ),
    (
        "flag_code",
        "INSERT INTO {ks}.flagged_codes (brand_id, warranty_stream_id, reason) VALUES (?, ?, ?)",
    ),
    (
        "flagged",
        "SELECT reason FROM {ks}.flagged_codes WHERE brand_id = ? AND warranty_stream_id = ?",
    ),
    (
        "set_warranty_owner",
        "INSERT INTO {ks}.warranty_owners (brand_id, warranty_stream_id, identity_key) \
         VALUES (?, ?, ?)",
    ),
    (
        "warranty_owner",
        "SELECT identity_key FROM {ks}.warranty_owners \
         WHERE brand_id = ? AND warranty_stream_id = ?",
    ),
    (
        "register_token",
        "INSERT INTO {ks}.link_tokens (link_token, brand_id) VALUES (?, ?)",
    ),
    (
        "token_brand",
        "SELECT brand_id FROM {ks}.link_tokens WHERE link_token = ?",
    ),
    (
        "add_warranty_assist",
        "UPDATE {ks}.warranty_owners SET assists = assists + ? \
         WHERE brand_id = ? AND warranty_stream_id = ?",
    ),
    (
        "warranty_assists",
        "SELECT assists FROM {ks}.warranty_owners WHERE brand_id = ? AND warranty_stream_id = ?",
    ),
    (
        "click",
        "SELECT last_click, counted_at FROM {ks}.clicks \
         WHERE brand_id = ? AND link_token = ? AND visitor = ?",
    ),
    (
        "record_click",
        "UPDATE {ks}.clicks SET last_click = ?, counted_at = ? \
         WHERE brand_id = ? AND link_token = ? AND visitor = ?",
    ),
    (
        "add_referrer_sale",
        "INSERT INTO {ks}.referrer_sales (brand_id, referrer, day, at, attribution_id) \
         VALUES (?, ?, ?, ?, ?)",
    ),
    (
        "referrer_sales",
        "SELECT at, attribution_id FROM {ks}.referrer_sales \
         WHERE brand_id = ? AND referrer = ? AND day = ? AND at > ?",
    ),
    (
        "add_store_sale",
        "INSERT INTO {ks}.store_sales (brand_id, store_id, day, at, attribution_id) \
         VALUES (?, ?, ?, ?, ?)",
    ),
    (
        "store_sales",
        "SELECT at, attribution_id FROM {ks}.store_sales \
         WHERE brand_id = ? AND store_id = ? AND day = ? AND at > ?",
    ),
];

/// (last click, when the visitor was last counted).
type ClickRow = (Option<DateTime<Utc>>, Option<DateTime<Utc>>);

/// A click counts once per visitor per this long.
pub const CLICK_DEDUPE: Duration = Duration::hours(24);

fn day(at: DateTime<Utc>) -> String {
    at.format("%Y-%m-%d").to_string()
}

impl Directory {
    pub async fn new(session: Arc<Session>, keyspace: &str) -> anyhow::Result<Self> {
        Ok(Self {
            db: Db::prepare(session, keyspace, STATEMENTS).await?,
        })
    }

    pub async fn register_member(
        &self,
        brand: &str,
        member: &str,
        registered_at: Option<DateTime<Utc>>,
        display_name: &str,
        identity_key: Option<&str>,
    ) -> Result<(), DbError> {
        let identities: Vec<&str> = identity_key.into_iter().collect();
        self.db
            .exec(
                "register_member",
                (registered_at, display_name, identities, brand, member),
            )
            .await
    }

    pub async fn add_identity(&self, brand: &str, member: &str, key: &str) -> Result<(), DbError> {
        self.db
            .exec("add_identity", (vec![key], brand, member))
            .await
    }

    pub async fn add_device(&self, brand: &str, member: &str, serial: &str) -> Result<(), DbError> {
        self.db
            .exec("add_device", (vec![serial], brand, member))
            .await
    }

    pub async fn member(&self, brand: &str, member: &str) -> Result<Option<MemberFacts>, DbError> {
        type Row = (
            Option<DateTime<Utc>>,
            Option<String>,
            Option<HashSet<String>>,
            Option<HashSet<String>>,
        );
        let row: Option<Row> = self.db.first("member", (brand, member)).await?;
        Ok(row.map(|(registered_at, name, identities, devices)| {
            let sorted = |set: Option<HashSet<String>>| {
                let mut values: Vec<String> = set.unwrap_or_default().into_iter().collect();
                values.sort();
                values
            };
            MemberFacts {
                registered_at,
                display_name: name.unwrap_or_default(),
                identities: sorted(identities),
                devices: sorted(devices),
            }
        }))
    }

    pub async fn set_owner(&self, brand: &str, key: &str, member: &str) -> Result<(), DbError> {
        self.db.exec("set_owner", (brand, key, member)).await
    }

    pub async fn owner(&self, brand: &str, key: &str) -> Result<Option<String>, DbError> {
        Ok(self
            .db
            .first::<(Option<String>,)>("owner", (brand, key))
            .await?
            .and_then(|(member,)| member))
    }

    pub async fn park(
        &self,
        brand: &str,
        key: &str,
        event_id: &str,
        envelope: &[u8],
    ) -> Result<(), DbError> {
        self.db.exec("park", (brand, key, event_id, envelope)).await
    }

    /// The activations parked under an identity: event id, envelope, failed attempts so far.
    pub async fn parked(&self, brand: &str, key: &str) -> Result<Vec<Parked>, DbError> {
        Ok(self
            .db
            .rows::<(String, Option<Vec<u8>>, Option<i32>)>("parked", (brand, key))
            .await?
            .into_iter()
            .map(|(event_id, envelope, attempts)| Parked {
                event_id,
                envelope: envelope.unwrap_or_default(),
                attempts: attempts.unwrap_or(0),
            })
            .collect())
    }

    /// Notes a parked activation's failed attempt (it stays parked).
    pub async fn park_failed(
        &self,
        brand: &str,
        key: &str,
        event_id: &str,
        attempts: i32,
        error: &str,
    ) -> Result<(), DbError> {
        self.db
            .exec("park_failed", (attempts, error, brand, key, event_id))
            .await
    }

    pub async fn unpark(&self, brand: &str, key: &str, event_id: &str) -> Result<(), DbError> {
        self.db.exec("unpark", (brand, key, event_id)).await
    }

    pub async fn flag_code(&self, brand: &str, stream: &str, reason: &str) -> Result<(), DbError> {
        self.db.exec("flag_code", (brand, stream, reason)).await
    }

    pub async fn flagged(&self, brand: &str, stream: &str) -> Result<Option<String>, DbError> {
        Ok(self
            .db
            .first::<(Option<String>,)>("flagged", (brand, stream))
            .await?
            .map(|(reason,)| reason.unwrap_or_default()))
    }

    pub async fn set_warranty_owner(
        &self,
        brand: &str,
        stream: &str,
        key: &str,
    ) -> Result<(), DbError> {
        self.db
            .exec("set_warranty_owner", (brand, stream, key))
            .await
    }

    pub async fn warranty_owner(
        &self,
        brand: &str,
        stream: &str,
    ) -> Result<Option<String>, DbError> {
        Ok(self
            .db
            .first::<(Option<String>,)>("warranty_owner", (brand, stream))
            .await?
            .and_then(|(key,)| key))
    }

    /// Notes that `assist_id` is bound to the warranty, so its return revokes the assist.
    pub async fn add_warranty_assist(
        &self,
        brand: &str,
        stream: &str,
        assist_id: &str,
    ) -> Result<(), DbError> {
        self.db
            .exec("add_warranty_assist", (vec![assist_id], brand, stream))
            .await
    }

    pub async fn warranty_assists(
        &self,
        brand: &str,
        stream: &str,
    ) -> Result<Vec<String>, DbError> {
        Ok(self
            .db
            .first::<(Option<HashSet<String>>,)>("warranty_assists", (brand, stream))
            .await?
            .and_then(|(set,)| set)
            .map(|set| set.into_iter().collect())
            .unwrap_or_default())
    }

    pub async fn register_token(&self, token: &str, brand: &str) -> Result<(), DbError> {
        self.db.exec("register_token", (token, brand)).await
    }

    pub async fn token_brand(&self, token: &str) -> Result<Option<String>, DbError> {
        Ok(self
            .db
            .first::<(Option<String>,)>("token_brand", (token,))
            .await?
            .and_then(|(brand,)| brand))
    }

    /// Records a visitor's click: whether it counts (the visitor's first in 24 hours) and
    /// whether it is the visitor's first on this link.
    pub async fn record_click(
        &self,
        brand: &str,
        token: &str,
        visitor: &str,
        now: DateTime<Utc>,
    ) -> Result<(bool, bool), DbError> {
        let previous: Option<ClickRow> = self.db.first("click", (brand, token, visitor)).await?;
        let first = previous.is_none();
        let counted_at = previous.and_then(|(_, counted)| counted);
        let counts = counted_at.is_none_or(|at| now - at >= CLICK_DEDUPE);
        let counted_at = if counts { Some(now) } else { counted_at };
        self.db
            .exec("record_click", (now, counted_at, brand, token, visitor))
            .await?;
        Ok((counts, first))
    }

    pub async fn last_click(
        &self,
        brand: &str,
        token: &str,
        visitor: &str,
    ) -> Result<Option<DateTime<Utc>>, DbError> {
        let row: Option<ClickRow> = self.db.first("click", (brand, token, visitor)).await?;
        Ok(row.and_then(|(last, _)| last))
    }

    /// Notes a sale for `referrer` at `at` and answers how many there were in the hour and the
    /// day up to it, this one included.
    pub async fn referrer_sales(
        &self,
        brand: &str,
        referrer: &str,
        at: DateTime<Utc>,
        attribution_id: &str,
    ) -> Result<(u32, u32), DbError> {
        self.db
            .exec(
                "add_referrer_sale",
                (brand, referrer, day(at), at, attribution_id),
            )
            .await?;
        let sales = self
            .recent("referrer_sales", brand, referrer, at, Duration::hours(24))
            .await?;
        let hour = sales
            .iter()
            .filter(|t| **t > at - Duration::hours(1))
            .count();
        Ok((hour as u32, sales.len() as u32))
    }

    /// Notes a sale at `store` and answers how many there were within `window` up to it.
    pub async fn store_sales(
        &self,
        brand: &str,
        store: &str,
        at: DateTime<Utc>,
        attribution_id: &str,
        window: Duration,
    ) -> Result<u32, DbError> {
        self.db
            .exec(
                "add_store_sale",
                (brand, store, day(at), at, attribution_id),
            )
            .await?;
        Ok(self
            .recent("store_sales", brand, store, at, window)
            .await?
            .len() as u32)
    }

    /// Sale times in (at - window, at], from the day partitions the window touches.
    async fn recent(
        &self,
        statement: &str,
        brand: &str,
        key: &str,
        at: DateTime<Utc>,
        window: Duration,
    ) -> Result<Vec<DateTime<Utc>>, DbError> {
        let since = at - window;
        let mut days = vec![day(since)];
        if day(at) != days[0] {
            days.push(day(at));
        }
        let mut times = Vec::new();
        for partition in days {
            let rows: Vec<(DateTime<Utc>, String)> = self
                .db
                .rows(statement, (brand, key, partition, since))
                .await?;
            times.extend(rows.into_iter().map(|(t, _)| t).filter(|t| *t <= at));
        }
        Ok(times)
    }
}
