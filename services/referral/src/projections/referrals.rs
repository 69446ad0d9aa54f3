//! Referrals as listed: by referrer (`referrals_by_referrer`, the whole decision in one row,
//! written `USING TIMESTAMP <version>`), the key from an attribution id to its row
//! (`referrals`), and the review queue (`held`, the attributions waiting for a reviewer).

use chrono::{DateTime, Utc};
use scanloop_bus::EventEnvelope;
use scanloop_proto::referral::v1 as pb;
use scanloop_proto::time::from_timestamp;
use scanloop_storage::DbError;
use scanloop_storage::paging::PageError;
use scylla::value::MaybeUnset;

use super::{ReadModels, page_error};

pub(super) const STATEMENTS: &[(&str, &str)] = &[
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
];

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

impl ReadModels {
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
    pub(super) async fn upsert_referral(
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
}
