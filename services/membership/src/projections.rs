//! Read models projected from `scanloop.membership.events.v1`: the points ledger (one row per
//! entry) and the KOC leaderboard per brand and region. Replaying the topic rebuilds them; every
//! write is guarded by the event's stream version, so a redelivered event changes nothing.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use scanloop_bus::EventEnvelope;
use scanloop_proto::time::from_timestamp;
use scanloop_storage::DbError;
use scanloop_storage::paging::PageError;
use scylla::client::session::Session;
use scylla::statement::prepared::PreparedStatement;

use crate::domain::MembershipEvent;
use crate::domain::tiers::Tier;

#[derive(Clone)]
pub struct ReadModels {
    inner: Arc<Statements>,
}

struct Statements {
    session: Arc<Session>,
    insert_ledger: PreparedStatement,
    select_ledger: PreparedStatement,
    select_standing: PreparedStatement,
    upsert_standing: PreparedStatement,
    insert_board: PreparedStatement,
    delete_board: PreparedStatement,
    select_board: PreparedStatement,
}

/// A ledger row: (version, points, kind, reason, at).
pub type LedgerRow = (i64, i64, String, String, DateTime<Utc>);
/// A leaderboard row: (member, score, display name, tier).
pub type BoardRow = (String, i64, Option<String>, Option<String>);

/// A member's current place on the leaderboard.
#[derive(Debug, Clone, Default, PartialEq)]
struct Standing {
    region: String,
    score: i64,
    display_name: String,
    tier: String,
    version: i64,
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
        let prepare = |cql: String| {
            let session = session.clone();
            async move { session.prepare(cql).await }
        };
        Ok(Self {
            inner: Arc::new(Statements {
                insert_ledger: prepare(format!(
                    "INSERT INTO {keyspace}.points_ledger \
                     (brand_id, member_id, version, points, kind, reason, at) \
                     VALUES (?, ?, ?, ?, ?, ?, ?)"
                ))
                .await?,
                select_ledger: prepare(format!(
                    "SELECT version, points, kind, reason, at FROM {keyspace}.points_ledger \
                     WHERE brand_id = ? AND member_id = ?"
                ))
                .await?,
                select_standing: prepare(format!(
                    "SELECT region, koc_score, display_name, tier, version \
                     FROM {keyspace}.leaderboard_members WHERE brand_id = ? AND member_id = ?"
                ))
                .await?,
                upsert_standing: prepare(format!(
                    "INSERT INTO {keyspace}.leaderboard_members \
                     (brand_id, member_id, region, koc_score, display_name, tier, version) \
                     VALUES (?, ?, ?, ?, ?, ?, ?)"
                ))
                .await?,
                insert_board: prepare(format!(
                    "INSERT INTO {keyspace}.leaderboard \
                     (brand_id, region, koc_score, member_id, display_name, tier) \
                     VALUES (?, ?, ?, ?, ?, ?)"
                ))
                .await?,
                delete_board: prepare(format!(
                    "DELETE FROM {keyspace}.leaderboard \
                     WHERE brand_id = ? AND region = ? AND koc_score = ? AND member_id = ?"
                ))
                .await?,
                select_board: prepare(format!(
                    "SELECT member_id, koc_score, display_name, tier FROM {keyspace}.leaderboard \
                     WHERE brand_id = ? AND region = ?"
                ))
                .await?,
                session,
            }),
        })
    }

    pub async fn ledger_page(
        &self,
        brand_id: &str,
        member_id: &str,
        page_size: u32,
        token: &str,
    ) -> Result<(Vec<LedgerRow>, String), PageError> {
        scanloop_storage::paging::page(
            &self.inner.session,
            &self.inner.select_ledger,
            (brand_id, member_id),
            page_size,
            token,
        )
        .await
    }

    pub async fn leaderboard_page(
        &self,
        brand_id: &str,
        region: &str,
        page_size: u32,
        token: &str,
    ) -> Result<(Vec<BoardRow>, String), PageError> {
        scanloop_storage::paging::page(
            &self.inner.session,
            &self.inner.select_board,
            (brand_id, region),
            page_size,
            token,
        )
        .await
    }

    async fn ledger(
        &self,
        envelope: &EventEnvelope,
        member_id: &str,
        points: i64,
        kind: &str,
        reason: &str,
        at: DateTime<Utc>,
    ) -> Result<(), DbError> {
        self.inner
            .session
            .execute_unpaged(
                &self.inner.insert_ledger,
                (
                    envelope.brand_id.as_str(),
                    member_id,
                    envelope.version as i64,
                    points,
                    kind,
                    reason,
                    at,
                ),
            )
            .await?;
        Ok(())
    }

    async fn standing(&self, brand_id: &str, member_id: &str) -> Result<Option<Standing>, DbError> {
        let rows = self
            .inner
            .session
            .execute_unpaged(&self.inner.select_standing, (brand_id, member_id))
            .await?
            .into_rows_result()?;
        Ok(rows
            .maybe_first_row::<(
                Option<String>,
                Option<i64>,
                Option<String>,
                Option<String>,
                Option<i64>,
            )>()?
            .map(|(region, score, display_name, tier, version)| Standing {
                region: region.unwrap_or_default(),
                score: score.unwrap_or_default(),
                display_name: display_name.unwrap_or_default(),
                tier: tier.unwrap_or_default(),
                version: version.unwrap_or_default(),
            }))
    }

    /// Moves the member on the brand-wide and regional boards to `next`, unless this event was
    /// already applied.
    async fn place(
        &self,
        envelope: &EventEnvelope,
        member_id: &str,
        change: impl FnOnce(&mut Standing),
    ) -> Result<(), DbError> {
        let brand = envelope.brand_id.as_str();
        let old = self.standing(brand, member_id).await?;
        let version = envelope.version as i64;
        if old.as_ref().is_some_and(|s| s.version >= version) {
            return Ok(());
        }
        let mut next = old.clone().unwrap_or_else(|| Standing {
            tier: Tier::Member.id().to_owned(),
            ..Standing::default()
        });
        change(&mut next);
        next.version = version;
        let session = &self.inner.session;
        if let Some(old) = &old {
            for region in boards(&old.region) {
                session
                    .execute_unpaged(
                        &self.inner.delete_board,
                        (brand, region, old.score, member_id),
                    )
                    .await?;
            }
        }
        for region in boards(&next.region) {
            session
                .execute_unpaged(
                    &self.inner.insert_board,
                    (
                        brand,
                        region,
                        next.score,
                        member_id,
                        next.display_name.as_str(),
                        next.tier.as_str(),
                    ),
                )
                .await?;
        }
        session
            .execute_unpaged(
                &self.inner.upsert_standing,
                (
                    brand,
                    member_id,
                    next.region.as_str(),
                    next.score,
                    next.display_name.as_str(),
                    next.tier.as_str(),
                    version,
                ),
            )
            .await?;
        Ok(())
    }
}

/// The boards a member appears on: the brand's ("") and their region's, if any.
fn boards(region: &str) -> Vec<&str> {
    if region.is_empty() {
        vec![""]
    } else {
        vec!["", region]
    }
}

/// The event types the read models are made of; the rest of the topic (identity claims and
/// links, device bindings, KOC status) is passed by unread. Keep equal to the arms of `apply`
/// that write.
pub const PROJECTED: &[&str] = &[
    "scanloop.membership.v1.MemberRegistered",
    "scanloop.membership.v1.EngagementRecorded",
    "scanloop.membership.v1.TierChanged",
    "scanloop.membership.v1.PointsEarned",
    "scanloop.membership.v1.PointsRedeemed",
    "scanloop.membership.v1.PointsExpired",
];

impl scanloop_eventstore::Projection for ReadModels {
    type Event = MembershipEvent;

    const TABLES: &'static [&'static str] =
        &["leaderboard", "leaderboard_members", "points_ledger"];

    fn event_types(&self) -> Option<&'static [&'static str]> {
        Some(PROJECTED)
    }

    /// Ledger rows are keyed by their event's version and a member's standing moves only to a
    /// newer version than it holds: an event seen again, however late, changes nothing.
    fn idempotent_by_construction(&self) -> bool {
        true
    }

    async fn apply(
        &self,
        envelope: &EventEnvelope,
        event: &MembershipEvent,
    ) -> Result<(), DbError> {
        let at = from_timestamp(envelope.occurred_at.as_ref()).unwrap_or_else(Utc::now);
        match event {
            MembershipEvent::MemberRegistered(e) => {
                let (name, region) = (e.display_name.clone(), e.region.clone());
                self.place(envelope, &e.member_id, |s| {
                    s.display_name = name;
                    s.region = region;
                })
                .await
            }
            MembershipEvent::EngagementRecorded(e) => {
                let score = e.koc_score;
                self.place(envelope, &e.member_id, |s| s.score = score)
                    .await
            }
            MembershipEvent::TierChanged(e) => {
                let tier = e.to_tier.clone();
                self.place(envelope, &e.member_id, |s| s.tier = tier).await
            }
            MembershipEvent::PointsEarned(e) => {
                let at = from_timestamp(e.earned_at.as_ref()).unwrap_or(at);
                self.ledger(envelope, &e.member_id, e.points, "earned", &e.reason, at)
                    .await
            }
            MembershipEvent::PointsRedeemed(e) => {
                let at = from_timestamp(e.redeemed_at.as_ref()).unwrap_or(at);
                self.ledger(envelope, &e.member_id, -e.points, "redeemed", &e.reason, at)
                    .await
            }
            MembershipEvent::PointsExpired(e) => {
                self.ledger(
                    envelope,
                    &e.member_id,
                    -e.points,
                    "expired",
                    "points expired",
                    at,
                )
                .await
            }
            MembershipEvent::IdentityClaimed(_)
            | MembershipEvent::IdentityLinked(_)
            | MembershipEvent::DeviceBound(_)
            | MembershipEvent::KocQualified(_)
            | MembershipEvent::KocLapsed(_) => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    scanloop_eventstore::projection_checks! {
        events: MembershipEvent,
        projected: PROJECTED,
        read_models: ReadModels,
        // Every file of the projection: its statements may be spread over them.
        sources: [include_str!("projections.rs")],
    }
}
