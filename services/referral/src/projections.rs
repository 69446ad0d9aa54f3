//! Read models projected from `scanloop.referral.events.v1`: links by member, referrals by
//! referrer and the review queue, the tree (two levels), funnel and store figures. Replaying the
//! topic rebuilds them. Rows several events change are written `USING TIMESTAMP <version>`, so an
//! older event never overwrites a newer one; counters count each event once (`counted_events`).
//! A revoked attribution (ReferralRejected REVOKED_AFTER_ATTRIBUTION after its
//! ReferralAttributed) is listed as rejected and taken out of the figures it was counted in.
//!
//! Here is what they share: [`ReadModels`] (one set of prepared statements over all of them),
//! `counted_events` and the projection, which applies each event to every read model it
//! changes. Each read model's statements, rows and
//! reads are in a module of its own: [`links`], [`referrals`] (with the review queue),
//! [`tree`], [`funnel`] and [`store_figures`].

use std::sync::Arc;

use chrono::{DateTime, Utc};
use scanloop_bus::EventEnvelope;
use scanloop_proto::referral::v1 as pb;
use scanloop_proto::time::from_timestamp;
use scanloop_storage::DbError;
use scanloop_storage::paging::PageError;
use scanloop_storage::statements::Db;
use scylla::client::session::Session;
use scylla::value::Counter;

use crate::domain::ReferralEvent;

pub mod funnel;
pub mod links;
pub mod referrals;
pub mod store_figures;
pub mod tree;

use funnel::FunnelDelta;
use referrals::listed_under;
use store_figures::{StoreSale, credits_store};
use tree::BrandTree;

/// The referral read models, over one set of prepared statements (each module's).
#[derive(Clone)]
pub struct ReadModels {
    db: Db,
}

const STATEMENTS: &[(&str, &str)] = &[(
    "count_event",
    "INSERT INTO {ks}.counted_events (brand_id, event_id) VALUES (?, ?) IF NOT EXISTS",
)];

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
        let statements = [
            STATEMENTS,
            links::STATEMENTS,
            referrals::STATEMENTS,
            tree::STATEMENTS,
            funnel::STATEMENTS,
            store_figures::STATEMENTS,
        ]
        .concat();
        Ok(Self {
            db: Db::prepare(session, keyspace, &statements).await?,
        })
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

    /// Rows several events change are written at their stream's version, the others are keyed
    /// by what they record, and counters count an event once (`counted_events`): an event seen
    /// again, however late, changes nothing.
    fn idempotent_by_construction(&self) -> bool {
        true
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

    scanloop_eventstore::projection_checks! {
        events: ReferralEvent,
        projected: PROJECTED,
        read_models: ReadModels,
        // Every file of the projection: its statements may be spread over them.
        sources: [include_str!("projections.rs"), include_str!("projections/links.rs"), include_str!("projections/referrals.rs"), include_str!("projections/tree.rs"), include_str!("projections/funnel.rs"), include_str!("projections/store_figures.rs")],
    }
}
