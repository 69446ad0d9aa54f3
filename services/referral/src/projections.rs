//! Read models projected from `scanloop.referral.events.v1`: links by member, referrals by
//! referrer and the review queue, the tree (two levels), funnel and store figures. Replaying the
//! topic rebuilds them. Rows several events change are written `USING TIMESTAMP <version>`, so an
//! older event never overwrites a newer one; counters count each event once (`counted_events`).
//! A revoked attribution (ReferralRejected REVOKED_AFTER_ATTRIBUTION after its
//! ReferralAttributed) is listed as rejected and taken out of the figures it was counted in.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use scanloop_bus::EventEnvelope;
use scanloop_proto::referral::v1 as pb;
use scanloop_proto::time::from_timestamp;
use scanloop_storage::DbError;
use scanloop_storage::paging::PageError;
use scylla::client::session::Session;
use scylla::value::{Counter, MaybeUnset};

use crate::db::Db;
use crate::domain::ReferralEvent;

pub mod tree;
use tree::BrandTree;

#[derive(Clone)]
pub struct ReadModels {
    db: Db,
}

const STATEMENTS: &[(&str, &str)] = &[
    (
        "insert_link",
        "INSERT INTO {ks}.links (brand_id, link_token, member_id, sku, campaign_id, url, created_at, \
         revoked) VALUES (?, ?, ?, ?, ?, ?, ?, false) USING TIMESTAMP ?",
    ),
    (
        "insert_link_by_member",
        "INSERT INTO {ks}.links_by_member (brand_id, member_id, created_at, link_token) \
         VALUES (?, ?, ?, ?)",
    ),
    (
        "revoke_link",
        "UPDATE {ks}.links USING TIMESTAMP ? SET revoked = true WHERE brand_id = ? AND link_token = ?",
    ),
    (
        "link",
        "SELECT member_id, sku, campaign_id, url, created_at, revoked FROM {ks}.links \
         WHERE brand_id = ? AND link_token = ?",
    ),
    (
        "links_by_member",
        "SELECT link_token FROM {ks}.links_by_member WHERE brand_id = ? AND member_id = ?",
    ),
    (
        "insert_share",
        "INSERT INTO {ks}.link_shares (brand_id, link_token, version, channel) VALUES (?, ?, ?, ?)",
    ),
    (
        "count_shares",
        "SELECT COUNT(*) FROM {ks}.link_shares WHERE brand_id = ? AND link_token = ?",
    ),
    (
        "insert_referral_key",
        "INSERT INTO {ks}.referrals (brand_id, attribution_id, referrer, activated_at, \
         warranty_stream_id) VALUES (?, ?, ?, ?, ?)",
    ),
    (
        "referral_key",
        "SELECT referrer, activated_at FROM {ks}.referrals WHERE brand_id = ? AND attribution_id = ?",
    ),
    (
        "referral_stream",
        "SELECT warranty_stream_id FROM {ks}.referrals WHERE brand_id = ? AND attribution_id = ?",
    ),
    // One statement for the whole row: a reader never sees a decision without its detail.
    // Bound by name (ReferralValues): more values than a tuple carries.
    (
        "upsert_referral",
        "INSERT INTO {ks}.referrals_by_referrer (brand_id, referrer, activated_at, \
         attribution_id, status, link_token, level2, buyer, sku, amount_fen, purchased_at, store_id, \
         rejection_reason, hold_reasons, detail, decided_at, payee) \
         VALUES (:brand_id, :referrer, :activated_at, :attribution_id, :status, :link_token, \
         :level2, :buyer, :sku, :amount_fen, :purchased_at, :store_id, :rejection_reason, \
         :hold_reasons, :detail, :decided_at, :payee) USING TIMESTAMP :version",
    ),
    (
        "referral_payee",
        "SELECT payee FROM {ks}.referrals_by_referrer \
         WHERE brand_id = ? AND referrer = ? AND activated_at = ? AND attribution_id = ?",
    ),
    (
        "referral",
        "SELECT attribution_id, status, link_token, referrer, level2, buyer, sku, amount_fen, \
         purchased_at, store_id, rejection_reason, hold_reasons, detail, decided_at, activated_at \
         FROM {ks}.referrals_by_referrer \
         WHERE brand_id = ? AND referrer = ? AND activated_at = ? AND attribution_id = ?",
    ),
    (
        "referrals_by_referrer",
        "SELECT attribution_id, status, link_token, referrer, level2, buyer, sku, amount_fen, \
         purchased_at, store_id, rejection_reason, hold_reasons, detail, decided_at, activated_at \
         FROM {ks}.referrals_by_referrer WHERE brand_id = ? AND referrer = ?",
    ),
    (
        "insert_held",
        "INSERT INTO {ks}.held (brand_id, activated_at, attribution_id, referrer) \
         VALUES (?, ?, ?, ?) USING TIMESTAMP ?",
    ),
    (
        "delete_held",
        "DELETE FROM {ks}.held USING TIMESTAMP ? \
         WHERE brand_id = ? AND activated_at = ? AND attribution_id = ?",
    ),
    (
        "held",
        "SELECT referrer, activated_at, attribution_id FROM {ks}.held WHERE brand_id = ?",
    ),
    (
        "set_parent",
        "INSERT INTO {ks}.tree_parents (brand_id, member_id, parent) VALUES (?, ?, ?)",
    ),
    (
        "parent",
        "SELECT parent FROM {ks}.tree_parents WHERE brand_id = ? AND member_id = ?",
    ),
    (
        "add_child",
        "INSERT INTO {ks}.tree_children (brand_id, parent, level, member_id) VALUES (?, ?, ?, ?)",
    ),
    (
        "children",
        "SELECT member_id FROM {ks}.tree_children WHERE brand_id = ? AND parent = ? AND level = ?",
    ),
    (
        "count_children",
        "SELECT COUNT(*) FROM {ks}.tree_children WHERE brand_id = ? AND parent = ? AND level = ?",
    ),
    (
        "count_event",
        "INSERT INTO {ks}.counted_events (brand_id, event_id) VALUES (?, ?) IF NOT EXISTS",
    ),
    (
        "bump_funnel",
        "UPDATE {ks}.funnel SET clicks = clicks + ?, visitors = visitors + ?, \
         shares = shares + ?, attributed = attributed + ?, held = held + ?, \
         rejected = rejected + ? WHERE brand_id = ? AND scope = ? AND sku = ?",
    ),
    (
        "funnel",
        "SELECT sku, clicks, visitors, shares, attributed, held, rejected FROM {ks}.funnel \
         WHERE brand_id = ? AND scope = ?",
    ),
    (
        "bump_store",
        "UPDATE {ks}.store_figures SET sales = sales + ?, amount_fen = amount_fen + ?, \
         credited = credited + ? WHERE brand_id = ? AND store_id = ?",
    ),
    (
        "store",
        "SELECT sales, amount_fen, credited FROM {ks}.store_figures \
         WHERE brand_id = ? AND store_id = ?",
    ),
];

/// Changes to one row of funnel counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FunnelDelta {
    pub clicks: i64,
    pub visitors: i64,
    pub shares: i64,
    pub attributed: i64,
    pub held: i64,
    pub rejected: i64,
}

/// Changes to one store's figures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct StoreSale {
    sales: i64,
    amount_fen: i64,
    credited: i64,
}

/// Whether a sale with this payee credits its store.
fn credits_store(payee: pb::Payee) -> bool {
    matches!(payee, pb::Payee::Store | pb::Payee::Both)
}

/// The values of `upsert_referral`, bound by marker name.
#[derive(scylla::SerializeRow)]
struct ReferralValues<'a> {
    brand_id: &'a str,
    referrer: &'a str,
    activated_at: DateTime<Utc>,
    attribution_id: &'a str,
    status: i32,
    link_token: &'a str,
    level2: &'a str,
    buyer: &'a str,
    sku: &'a str,
    amount_fen: Option<i64>,
    purchased_at: Option<DateTime<Utc>>,
    store_id: &'a str,
    rejection_reason: i32,
    hold_reasons: Vec<i32>,
    detail: &'a str,
    decided_at: Option<DateTime<Utc>>,
    /// Set by the attribution; unset (left as it is) by every other event.
    payee: MaybeUnset<i32>,
    version: i64,
}

/// A link as the read model has it.
#[derive(Debug, Clone, PartialEq)]
pub struct LinkRow {
    pub token: String,
    pub member_id: String,
    pub sku: String,
    pub campaign_id: String,
    pub url: String,
    pub created_at: Option<DateTime<Utc>>,
    pub revoked: bool,
    pub shares: u64,
}

type ReferralRow = (
    String,
    Option<i32>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<i64>,
    Option<DateTime<Utc>>,
    Option<String>,
    Option<i32>,
    Option<Vec<i32>>,
    Option<String>,
    Option<DateTime<Utc>>,
    DateTime<Utc>,
);

fn to_referral(row: ReferralRow) -> pb::Referral {
    let (
        attribution_id,
        status,
        token,
        referrer,
        level2,
        buyer,
        sku,
        amount_fen,
        purchased_at,
        store_id,
        rejection_reason,
        hold_reasons,
        detail,
        decided_at,
        _activated_at,
    ) = row;
    pb::Referral {
        attribution_id,
        status: status.unwrap_or_default(),
        token: token.unwrap_or_default(),
        referrer_member_id: referrer.unwrap_or_default(),
        buyer_member_id: buyer.unwrap_or_default(),
        sku: sku.unwrap_or_default(),
        purchase_amount: amount_fen.map(|amount_fen| scanloop_proto::common::v1::Money {
            amount_fen,
            currency: "CNY".into(),
        }),
        purchased_at: purchased_at.map(scanloop_proto::time::to_timestamp),
        store_id: store_id.unwrap_or_default(),
        rejection_reason: rejection_reason.unwrap_or_default(),
        hold_reasons: hold_reasons.unwrap_or_default(),
        detail: detail.unwrap_or_default(),
        decided_at: decided_at.map(scanloop_proto::time::to_timestamp),
        level2_member_id: level2.unwrap_or_default(),
    }
}

/// The referrer a referral is listed under: the level-1 member, or for a store sale without a
/// link, the store (`store:<id>`).
pub fn listed_under(level1: &str, store_id: &str) -> String {
    if level1.is_empty() {
        format!("store:{store_id}")
    } else {
        level1.to_owned()
    }
}

fn count(counter: Option<Counter>) -> i64 {
    counter.map_or(0, |Counter(n)| n)
}

fn page_error(e: DbError) -> PageError {
    PageError::Db(e)
}

impl ReadModels {
    pub async fn new(session: Arc<Session>, keyspace: &str) -> anyhow::Result<Self> {
        scanloop_storage::require_schema(
            &session,
            keyspace,
            crate::schema::COMPONENT,
            crate::schema::SCHEMA_VERSION,
        )
        .await?;
        Ok(Self {
            db: Db::prepare(session, keyspace, STATEMENTS).await?,
        })
    }

    pub async fn link(&self, brand: &str, token: &str) -> Result<Option<LinkRow>, DbError> {
        type Row = (
            Option<String>,
            Option<String>,
            Option<String>,
            Option<String>,
            Option<DateTime<Utc>>,
            Option<bool>,
        );
        let Some(row) = self.db.first::<Row>("link", (brand, token)).await? else {
            return Ok(None);
        };
        let (shares,): (i64,) = self
            .db
            .first("count_shares", (brand, token))
            .await?
            .unwrap_or((0,));
        let (member_id, sku, campaign_id, url, created_at, revoked) = row;
        Ok(Some(LinkRow {
            token: token.to_owned(),
            member_id: member_id.unwrap_or_default(),
            sku: sku.unwrap_or_default(),
            campaign_id: campaign_id.unwrap_or_default(),
            url: url.unwrap_or_default(),
            created_at,
            revoked: revoked.unwrap_or_default(),
            shares: shares.max(0) as u64,
        }))
    }

    pub async fn links_page(
        &self,
        brand: &str,
        member: &str,
        page_size: u32,
        token: &str,
    ) -> Result<(Vec<LinkRow>, String), PageError> {
        let (tokens, next): (Vec<(String,)>, String) = scanloop_storage::paging::page(
            self.db.session(),
            self.db.statement("links_by_member").map_err(page_error)?,
            (brand, member),
            page_size,
            token,
        )
        .await?;
        let links = futures::future::try_join_all(tokens.iter().map(|(t,)| self.link(brand, t)))
            .await
            .map_err(page_error)?;
        Ok((links.into_iter().flatten().collect(), next))
    }

    pub async fn referrals_page(
        &self,
        brand: &str,
        referrer: &str,
        page_size: u32,
        token: &str,
    ) -> Result<(Vec<pb::Referral>, String), PageError> {
        let (rows, next): (Vec<ReferralRow>, String) = scanloop_storage::paging::page(
            self.db.session(),
            self.db
                .statement("referrals_by_referrer")
                .map_err(page_error)?,
            (brand, referrer),
            page_size,
            token,
        )
        .await?;
        Ok((rows.into_iter().map(to_referral).collect(), next))
    }

    /// One referral by id, as listed.
    pub async fn referral(
        &self,
        brand: &str,
        attribution_id: &str,
    ) -> Result<Option<pb::Referral>, DbError> {
        let Some((Some(referrer), Some(at))) = self
            .db
            .first::<(Option<String>, Option<DateTime<Utc>>)>(
                "referral_key",
                (brand, attribution_id),
            )
            .await?
        else {
            return Ok(None);
        };
        Ok(self
            .db
            .first::<ReferralRow>("referral", (brand, referrer, at, attribution_id))
            .await?
            .map(to_referral))
    }

    pub async fn held_page(
        &self,
        brand: &str,
        page_size: u32,
        token: &str,
    ) -> Result<(Vec<pb::Referral>, String), PageError> {
        let (keys, next): (Vec<(String, DateTime<Utc>, String)>, String) =
            scanloop_storage::paging::page(
                self.db.session(),
                self.db.statement("held").map_err(page_error)?,
                (brand,),
                page_size,
                token,
            )
            .await?;
        let rows = futures::future::try_join_all(keys.iter().map(|(referrer, at, id)| {
            self.db
                .first::<ReferralRow>("referral", (brand, referrer.as_str(), *at, id.as_str()))
        }))
        .await
        .map_err(page_error)?;
        Ok((rows.into_iter().flatten().map(to_referral).collect(), next))
    }

    pub async fn parent(&self, brand: &str, member: &str) -> Result<Option<String>, DbError> {
        Ok(self
            .db
            .first::<(Option<String>,)>("parent", (brand, member))
            .await?
            .and_then(|(p,)| p))
    }

    pub async fn children_page(
        &self,
        brand: &str,
        member: &str,
        level: i32,
        page_size: u32,
        token: &str,
    ) -> Result<(Vec<String>, String), PageError> {
        let (rows, next): (Vec<(String,)>, String) = scanloop_storage::paging::page(
            self.db.session(),
            self.db.statement("children").map_err(page_error)?,
            (brand, member, level),
            page_size,
            token,
        )
        .await?;
        Ok((rows.into_iter().map(|(m,)| m).collect(), next))
    }

    pub async fn count_children(
        &self,
        brand: &str,
        member: &str,
        level: i32,
    ) -> Result<u64, DbError> {
        let (n,): (i64,) = self
            .db
            .first("count_children", (brand, member, level))
            .await?
            .unwrap_or((0,));
        Ok(n.max(0) as u64)
    }

    /// Funnel counters per SKU for a scope (a member id, or "" for the brand).
    pub async fn funnel(
        &self,
        brand: &str,
        scope: &str,
    ) -> Result<Vec<(String, FunnelDelta)>, DbError> {
        type Row = (
            String,
            Option<Counter>,
            Option<Counter>,
            Option<Counter>,
            Option<Counter>,
            Option<Counter>,
            Option<Counter>,
        );
        let rows: Vec<Row> = self.db.rows("funnel", (brand, scope)).await?;
        Ok(rows
            .into_iter()
            .map(
                |(sku, clicks, visitors, shares, attributed, held, rejected)| {
                    (
                        sku,
                        FunnelDelta {
                            clicks: count(clicks),
                            visitors: count(visitors),
                            shares: count(shares),
                            attributed: count(attributed),
                            held: count(held),
                            rejected: count(rejected),
                        },
                    )
                },
            )
            .collect())
    }

    /// Adds to the funnel of the member's scope and the brand's.
    pub async fn bump_funnel(
        &self,
        brand: &str,
        member: &str,
        sku: &str,
        d: FunnelDelta,
    ) -> Result<(), DbError> {
        let scopes: Vec<&str> = if member.is_empty() {
            vec![""]
        } else {
            vec![member, ""]
        };
        for scope in scopes {
            self.db
                .exec(
                    "bump_funnel",
                    (
                        Counter(d.clicks),
                        Counter(d.visitors),
                        Counter(d.shares),
                        Counter(d.attributed),
                        Counter(d.held),
                        Counter(d.rejected),
                        brand,
                        scope,
                        sku,
                    ),
                )
                .await?;
        }
        Ok(())
    }

    pub async fn store(&self, brand: &str, store: &str) -> Result<(i64, i64, i64), DbError> {
        let row: Option<(Option<Counter>, Option<Counter>, Option<Counter>)> =
            self.db.first("store", (brand, store)).await?;
        let (sales, amount, credited) = row.unwrap_or((None, None, None));
        Ok((count(sales), count(amount), count(credited)))
    }

    /// Counts an event into counters once: false if it was already counted.
    async fn first_count(&self, envelope: &EventEnvelope) -> Result<bool, DbError> {
        self.db
            .exec_if(
                "count_event",
                (envelope.brand_id.as_str(), envelope.event_id.as_str()),
            )
            .await
    }

    /// The warranty stream whose attribution stream records `attribution_id`.
    pub async fn referral_stream(
        &self,
        brand: &str,
        attribution_id: &str,
    ) -> Result<Option<String>, DbError> {
        Ok(self
            .db
            .first::<(Option<String>,)>("referral_stream", (brand, attribution_id))
            .await?
            .and_then(|(s,)| s))
    }

    /// Writes the listed referral; `payee` only from the attribution (None leaves it as it is).
    async fn upsert_referral(
        &self,
        envelope: &EventEnvelope,
        referral: &pb::Referral,
        activated_at: DateTime<Utc>,
        payee: Option<pb::Payee>,
    ) -> Result<(), DbError> {
        let brand = envelope.brand_id.as_str();
        let version = envelope.version as i64;
        self.db
            .exec(
                "insert_referral_key",
                (
                    brand,
                    referral.attribution_id.as_str(),
                    referral.referrer_member_id.as_str(),
                    activated_at,
                    // Attribution streams are named after the warranty stream.
                    envelope.stream_id.trim_start_matches("attribution-"),
                ),
            )
            .await?;
        let values = ReferralValues {
            brand_id: brand,
            referrer: referral.referrer_member_id.as_str(),
            activated_at,
            attribution_id: referral.attribution_id.as_str(),
            status: referral.status,
            link_token: referral.token.as_str(),
            level2: referral.level2_member_id.as_str(),
            buyer: referral.buyer_member_id.as_str(),
            sku: referral.sku.as_str(),
            amount_fen: referral.purchase_amount.as_ref().map(|m| m.amount_fen),
            purchased_at: from_timestamp(referral.purchased_at.as_ref()),
            store_id: referral.store_id.as_str(),
            rejection_reason: referral.rejection_reason,
            hold_reasons: referral.hold_reasons.clone(),
            detail: referral.detail.as_str(),
            decided_at: from_timestamp(referral.decided_at.as_ref()),
            payee: payee.map_or(MaybeUnset::Unset, |p| MaybeUnset::Set(p as i32)),
            // USING TIMESTAMP: the stream version orders the writes.
            version,
        };
        self.db.exec("upsert_referral", values).await
    }

    async fn apply_attributed(
        &self,
        envelope: &EventEnvelope,
        a: &pb::ReferralAttributed,
        decided_at: DateTime<Utc>,
    ) -> Result<(), DbError> {
        let brand = envelope.brand_id.as_str();
        let activated_at = from_timestamp(a.activated_at.as_ref()).unwrap_or(decided_at);
        let referrer = listed_under(&a.level1_member_id, &a.store_id);
        let referral = pb::Referral {
            attribution_id: a.attribution_id.clone(),
            status: pb::ReferralStatus::Attributed as i32,
            token: a.token.clone(),
            referrer_member_id: referrer.clone(),
            buyer_member_id: a.buyer_member_id.clone(),
            sku: a.sku.clone(),
            purchase_amount: a.purchase_amount.clone(),
            purchased_at: a.purchased_at,
            store_id: a.store_id.clone(),
            decided_at: Some(scanloop_proto::time::to_timestamp(decided_at)),
            level2_member_id: a.level2_member_id.clone(),
            ..pb::Referral::default()
        };
        self.upsert_referral(envelope, &referral, activated_at, Some(a.payee()))
            .await?;
        if a.reviewed {
            self.db
                .exec(
                    "delete_held",
                    (
                        envelope.version as i64,
                        brand,
                        activated_at,
                        a.attribution_id.as_str(),
                    ),
                )
                .await?;
        }
        if self.first_count(envelope).await? {
            let delta = FunnelDelta {
                attributed: 1,
                held: if a.reviewed { -1 } else { 0 },
                ..FunnelDelta::default()
            };
            self.bump_funnel(brand, &a.level1_member_id, &a.sku, delta)
                .await?;
            if !a.store_id.is_empty() {
                let sale = StoreSale {
                    sales: 1,
                    amount_fen: a.purchase_amount.as_ref().map_or(0, |m| m.amount_fen),
                    credited: i64::from(credits_store(a.payee())),
                };
                self.bump_store(brand, &a.store_id, sale).await?;
            }
        }
        Ok(())
    }

    async fn bump_store(&self, brand: &str, store: &str, d: StoreSale) -> Result<(), DbError> {
        self.db
            .exec(
                "bump_store",
                (
                    Counter(d.sales),
                    Counter(d.amount_fen),
                    Counter(d.credited),
                    brand,
                    store,
                ),
            )
            .await
    }

    /// A rejection: the sale's only outcome, the end of a review (the held row goes), or the
    /// revocation of an attribution that counted (it comes out of the attributed and store
    /// figures; the buyer's parent stays, see ParentSet).
    async fn apply_rejected(
        &self,
        envelope: &EventEnvelope,
        r: &pb::ReferralRejected,
        at: DateTime<Utc>,
    ) -> Result<(), DbError> {
        let brand = envelope.brand_id.as_str();
        let version = envelope.version as i64;
        // Told by the event itself, not by the row, so a redelivery after a crash between the
        // row and the counters still takes the right figures back.
        // (`revoked` is set on new events; older revocations say so only by their reason.)
        let revoked = r.revoked || r.reason() == pb::RejectionReason::RevokedAfterAttribution;
        // A rejection after review replaces the held row, a revocation the attributed row;
        // otherwise the referral is listed under the link owner with the activation time from
        // the key table.
        let existing = self.referral(brand, &r.attribution_id).await?;
        let was_held = !revoked
            && existing
                .as_ref()
                .is_some_and(|e| e.status == pb::ReferralStatus::Held as i32);
        let activated_at = match self
            .db
            .first::<(Option<String>, Option<DateTime<Utc>>)>(
                "referral_key",
                (brand, r.attribution_id.as_str()),
            )
            .await?
        {
            Some((_, Some(activated_at))) => activated_at,
            _ => at,
        };
        let base = existing.unwrap_or_default();
        let referral = pb::Referral {
            attribution_id: r.attribution_id.clone(),
            status: pb::ReferralStatus::Rejected as i32,
            token: r.token.clone(),
            referrer_member_id: if r.level1_member_id.is_empty() {
                base.referrer_member_id.clone()
            } else {
                r.level1_member_id.clone()
            },
            buyer_member_id: r.buyer_member_id.clone(),
            sku: r.sku.clone(),
            rejection_reason: r.reason,
            detail: r.detail.clone(),
            decided_at: Some(scanloop_proto::time::to_timestamp(at)),
            hold_reasons: Vec::new(),
            ..base
        };
        if referral.referrer_member_id.is_empty() {
            // An unknown token has no owner to list it under: counted brand-wide only.
            if self.first_count(envelope).await? {
                let delta = FunnelDelta {
                    rejected: 1,
                    ..FunnelDelta::default()
                };
                self.bump_funnel(brand, "", &r.sku, delta).await?;
            }
            return Ok(());
        }
        self.upsert_referral(envelope, &referral, activated_at, None)
            .await?;
        if was_held {
            self.db
                .exec(
                    "delete_held",
                    (version, brand, activated_at, r.attribution_id.as_str()),
                )
                .await?;
        }
        // The store sale the attribution added, to take back (the row keeps store and amount).
        let store_sale = if revoked && !referral.store_id.is_empty() {
            let credited = self.credited_store(brand, &referral, activated_at).await?;
            Some(StoreSale {
                sales: -1,
                amount_fen: -referral
                    .purchase_amount
                    .as_ref()
                    .map_or(0, |m| m.amount_fen),
                credited: -i64::from(credited),
            })
        } else {
            None
        };
        if self.first_count(envelope).await? {
            let delta = FunnelDelta {
                rejected: 1,
                held: if was_held { -1 } else { 0 },
                attributed: if revoked { -1 } else { 0 },
                ..FunnelDelta::default()
            };
            self.bump_funnel(brand, &r.level1_member_id, &r.sku, delta)
                .await?;
            if let Some(sale) = store_sale {
                self.bump_store(brand, &referral.store_id, sale).await?;
            }
        }
        Ok(())
    }

    /// Whether the store earned from this listed sale, by the payee its attribution recorded. A
    /// row from before schema 2 has none: then only a sale listed under the store credits it.
    async fn credited_store(
        &self,
        brand: &str,
        referral: &pb::Referral,
        activated_at: DateTime<Utc>,
    ) -> Result<bool, DbError> {
        let payee = self
            .db
            .first::<(Option<i32>,)>(
                "referral_payee",
                (
                    brand,
                    referral.referrer_member_id.as_str(),
                    activated_at,
                    referral.attribution_id.as_str(),
                ),
            )
            .await?
            .and_then(|(p,)| p);
        Ok(match payee.and_then(|p| pb::Payee::try_from(p).ok()) {
            Some(payee) => credits_store(payee),
            None => referral.referrer_member_id.starts_with("store:"),
        })
    }
}

/// The event types the read models are made of; the rest of the topic (reviews, root claims,
/// device attributions, campaigns and assists) is passed by unread. Keep equal to the arms of
/// `apply` that write.
pub const PROJECTED: &[&str] = &[
    "scanloop.referral.v1.LinkCreated",
    "scanloop.referral.v1.LinkRevoked",
    "scanloop.referral.v1.LinkShared",
    "scanloop.referral.v1.ReferralAttributed",
    "scanloop.referral.v1.ReferralHeld",
    "scanloop.referral.v1.ReferralRejected",
    "scanloop.referral.v1.ParentSet",
];

impl scanloop_eventstore::Projection for ReadModels {
    type Event = ReferralEvent;

    const TABLES: &'static [&'static str] = &[
        "counted_events",
        "funnel",
        "held",
        "link_shares",
        "links",
        "links_by_member",
        "referrals",
        "referrals_by_referrer",
        "store_figures",
        "tree_children",
        "tree_parents",
    ];

    fn event_types(&self) -> Option<&'static [&'static str]> {
        Some(PROJECTED)
    }

    async fn apply(&self, envelope: &EventEnvelope, event: &ReferralEvent) -> Result<(), DbError> {
        let brand = envelope.brand_id.as_str();
        let version = envelope.version as i64;
        let at = from_timestamp(envelope.occurred_at.as_ref()).unwrap_or_else(Utc::now);
        match event {
            ReferralEvent::LinkCreated(e) => {
                let created = from_timestamp(e.created_at.as_ref()).unwrap_or(at);
                self.db
                    .exec(
                        "insert_link",
                        (
                            brand,
                            e.token.as_str(),
                            e.member_id.as_str(),
                            e.sku.as_str(),
                            e.campaign_id.as_str(),
                            e.url.as_str(),
                            created,
                            version,
                        ),
                    )
                    .await?;
                self.db
                    .exec(
                        "insert_link_by_member",
                        (brand, e.member_id.as_str(), created, e.token.as_str()),
                    )
                    .await
            }
            ReferralEvent::LinkRevoked(e) => {
                self.db
                    .exec("revoke_link", (version, brand, e.token.as_str()))
                    .await
            }
            ReferralEvent::LinkShared(e) => {
                self.db
                    .exec(
                        "insert_share",
                        (brand, e.token.as_str(), version, e.channel),
                    )
                    .await?;
                if self.first_count(envelope).await? {
                    let sku = self
                        .link(brand, &e.token)
                        .await?
                        .map(|l| l.sku)
                        .unwrap_or_default();
                    let delta = FunnelDelta {
                        shares: 1,
                        ..FunnelDelta::default()
                    };
                    self.bump_funnel(brand, &e.member_id, &sku, delta).await?;
                }
                Ok(())
            }
            ReferralEvent::ReferralAttributed(a) => self.apply_attributed(envelope, a, at).await,
            ReferralEvent::ReferralHeld(h) => {
                let Some(a) = &h.attribution else {
                    return Ok(());
                };
                let activated_at = from_timestamp(a.activated_at.as_ref()).unwrap_or(at);
                let referrer = listed_under(&a.level1_member_id, &a.store_id);
                let referral = pb::Referral {
                    attribution_id: a.attribution_id.clone(),
                    status: pb::ReferralStatus::Held as i32,
                    token: a.token.clone(),
                    referrer_member_id: referrer.clone(),
                    buyer_member_id: a.buyer_member_id.clone(),
                    sku: a.sku.clone(),
                    purchase_amount: a.purchase_amount.clone(),
                    purchased_at: a.purchased_at,
                    store_id: a.store_id.clone(),
                    hold_reasons: h.reasons.clone(),
                    detail: h.detail.clone(),
                    decided_at: Some(scanloop_proto::time::to_timestamp(at)),
                    level2_member_id: a.level2_member_id.clone(),
                    ..pb::Referral::default()
                };
                self.upsert_referral(envelope, &referral, activated_at, None)
                    .await?;
                self.db
                    .exec(
                        "insert_held",
                        (
                            brand,
                            activated_at,
                            a.attribution_id.as_str(),
                            referrer.as_str(),
                            version,
                        ),
                    )
                    .await?;
                if self.first_count(envelope).await? {
                    let delta = FunnelDelta {
                        held: 1,
                        ..FunnelDelta::default()
                    };
                    self.bump_funnel(brand, &a.level1_member_id, &a.sku, delta)
                        .await?;
                }
                Ok(())
            }
            ReferralEvent::ReferralRejected(r) => self.apply_rejected(envelope, r, at).await,
            // A revocation leaves the tree alone: the parent bound by a revoked attribution stays
            // (parents are never rebound), so nothing here undoes a ParentSet.
            ReferralEvent::ParentSet(p) => {
                let rows = BrandTree {
                    db: &self.db,
                    brand,
                };
                tree::project_parent_set(&rows, &p.member_id, &p.parent_member_id).await
            }
            ReferralEvent::ReferralReviewed(_)
            | ReferralEvent::RootClaimed(_)
            | ReferralEvent::DeviceAttributed(_)
            | ReferralEvent::CampaignDefined(_)
            | ReferralEvent::AssistStarted(_)
            | ReferralEvent::AssistProgressed(_)
            | ReferralEvent::AssistCompleted(_)
            | ReferralEvent::AssistRevoked(_) => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_declared_event_types_are_this_services_types() {
        let unknown =
            scanloop_eventstore::projection::unknown_event_types::<ReferralEvent>(PROJECTED);
        assert!(
            unknown.is_empty(),
            "not event types of this service: {unknown:?}"
        );
    }

    #[test]
    fn the_declared_tables_are_the_tables_this_projection_writes() {
        let source = include_str!("projections.rs");
        let mismatch = scanloop_eventstore::projection::undeclared_tables::<ReadModels>(source);
        assert!(mismatch.is_empty(), "{mismatch}");
    }
}
