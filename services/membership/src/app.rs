//! Command handling for members: the I/O around the pure domain. Identity claims come first
//! (their own streams, settled by conditional appends), then the member's stream.

use chrono::{DateTime, Utc};
use scanloop_eventstore::requests::RequestCheck;
use scanloop_eventstore::{AppendMeta, Outbox, Repository};
use scanloop_pii::IdentityHasher;
use scanloop_proto::common::v1::{BuyerIdentity, StoredIdentity};
use scanloop_proto::membership::v1 as pb;
use scanloop_service::{RequestContext, ServiceError};
use scanloop_timers::SharedClock;

use crate::domain::identity::{self, Claim};
use crate::domain::member::{self, Member, Rules};
use crate::domain::{MembershipEvent, Rejection};
use scanloop_pii::identity_key;

pub struct Membership {
    members: Repository<Member>,
    claims: Repository<Claim>,
    hasher: IdentityHasher,
    rules: Rules,
    /// The time every decision uses (the system clock; tests move it).
    clock: SharedClock,
}

/// A member as the write side knows it, with its stream version.
pub struct MemberState {
    pub member: Member,
    pub version: u64,
}

impl Membership {
    pub fn new(outbox: Outbox, hasher: IdentityHasher, rules: Rules, clock: SharedClock) -> Self {
        Self {
            members: Repository::new(outbox.clone()),
            claims: Repository::new(outbox),
            hasher,
            rules,
            clock,
        }
    }

    /// Now, by the clock commands and the timer job decide with.
    pub fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }

    /// Keyed hashing of identities and request fingerprints.
    pub fn hasher(&self) -> &IdentityHasher {
        &self.hasher
    }

    pub fn rules(&self) -> &Rules {
        &self.rules
    }

    /// The caller's identity in stored form (a phone number becomes its keyed hash).
    pub fn stored_identity(
        &self,
        brand_id: &str,
        identity: Option<&BuyerIdentity>,
    ) -> Result<(StoredIdentity, String), ServiceError> {
        let stored = self
            .hasher
            .stored_identity(brand_id, identity, "identity")
            .map_err(|e| ServiceError::InvalidArgument(e.to_string()))?;
        let key = identity_key(&stored)
            .ok_or_else(|| ServiceError::invalid("identity must be a phone number or a unionid"))?;
        Ok((stored, key))
    }

    /// The member an identity belongs to, if any.
    pub async fn owner_of(
        &self,
        brand_id: &str,
        key: &str,
    ) -> Result<Option<String>, ServiceError> {
        let claim = self
            .claims
            .load::<Rejection>(&identity::stream_id(brand_id, key))
            .await?;
        Ok(claim.state.member_id)
    }

    /// Claims `identity` for `member_id`; the member it already belongs to otherwise.
    async fn claim(
        &self,
        meta: &AppendMeta,
        member_id: &str,
        identity: &StoredIdentity,
        key: &str,
    ) -> Result<Result<(), String>, ServiceError> {
        let outcome = self
            .claims
            .execute(&identity::stream_id(&meta.brand_id, key), meta, |claim| {
                identity::claim(claim, member_id, identity)
            })
            .await;
        match outcome {
            Ok(_) => Ok(Ok(())),
            Err(scanloop_eventstore::ExecuteError::Rejected(Rejection::AlreadyExists(_))) => {
                let owner = self.owner_of(&meta.brand_id, key).await?;
                Ok(Err(owner.unwrap_or_default()))
            }
            Err(other) => Err(other.into()),
        }
    }

    pub async fn register(
        &self,
        ctx: &RequestContext,
        identity: StoredIdentity,
        key: String,
        display_name: String,
        region: String,
    ) -> Result<MemberState, ServiceError> {
        let meta = ctx.meta();
        let member_id = identity::derived_member_id(&ctx.brand_id, &key).to_string();
        let cmd = member::Register {
            member_id: member_id.clone(),
            identity: identity.clone(),
            display_name,
            region,
            now: self.now(),
        };
        // Bad input is refused before the identity is claimed: a refusal writes nothing.
        member::validate_registration(&cmd)?;
        // A registration is mostly a new buyer's: their identity claim and member streams open
        // with it (an existing member's are read again after one refused conditional write).
        self.claims
            .presume_new(&identity::stream_id(&meta.brand_id, &key));
        self.members
            .presume_new(&member::stream_id(&ctx.brand_id, &member_id));
        if let Err(owner) = self.claim(&meta, &member_id, &identity, &key).await? {
            return Err(ServiceError::AlreadyExists(format!(
                "this identity already belongs to member {owner}"
            )));
        }
        self.run(&ctx.brand_id, &member_id, &meta, |m| {
            member::register(m, &cmd)
        })
        .await
    }

    pub async fn link(
        &self,
        ctx: &RequestContext,
        member_id: &str,
        identity: StoredIdentity,
        key: String,
    ) -> Result<MemberState, ServiceError> {
        let meta = ctx.meta();
        // The member's own stream is checked before the identity is claimed: an id already used
        // there for another command must not claim an identity that it then cannot link.
        let loaded = self
            .members
            .load::<Rejection>(&member::stream_id(&ctx.brand_id, member_id))
            .await?;
        if !loaded.state.is_registered() {
            return Err(ServiceError::NotFound(format!("no member {member_id}")));
        }
        if let Some(request) = &meta.request
            && loaded.requests.check(request) == RequestCheck::Reused
        {
            return Err(
                scanloop_eventstore::ExecuteError::<Rejection>::RequestReused {
                    request_id: request.request_id.clone(),
                }
                .into(),
            );
        }
        if let Err(owner) = self.claim(&meta, member_id, &identity, &key).await? {
            return Err(ServiceError::AlreadyExists(format!(
                "this identity already belongs to member {owner}"
            )));
        }
        self.run(&ctx.brand_id, member_id, &meta, |m| {
            member::link(m, &identity)
        })
        .await
    }

    /// A registered member, from its stream (always current).
    pub async fn get(&self, brand_id: &str, member_id: &str) -> Result<MemberState, ServiceError> {
        let loaded = self
            .members
            .load::<Rejection>(&member::stream_id(brand_id, member_id))
            .await?;
        if !loaded.state.is_registered() {
            return Err(ServiceError::NotFound(format!("no member {member_id}")));
        }
        Ok(MemberState {
            member: loaded.state,
            version: loaded.version,
        })
    }

    pub async fn award(
        &self,
        ctx: &RequestContext,
        member_id: &str,
        points: i64,
        reason: &str,
    ) -> Result<MemberState, ServiceError> {
        let cmd = points_command(ctx, points, reason, self.now());
        self.run(&ctx.brand_id, member_id, &ctx.meta(), |m| {
            member::award(m, &cmd, &self.rules)
        })
        .await
    }

    pub async fn redeem(
        &self,
        ctx: &RequestContext,
        member_id: &str,
        points: i64,
        reason: &str,
    ) -> Result<MemberState, ServiceError> {
        let cmd = points_command(ctx, points, reason, self.now());
        self.run(&ctx.brand_id, member_id, &ctx.meta(), |m| {
            member::redeem(m, &cmd)
        })
        .await
    }

    pub async fn engage(
        &self,
        ctx: &RequestContext,
        member_id: &str,
        kind: pb::EngagementKind,
        occurred_at: DateTime<Utc>,
    ) -> Result<MemberState, ServiceError> {
        self.record_engagement(&ctx.meta(), member_id, kind, occurred_at, self.now())
            .await
    }

    /// The reaction to referral's `LinkShared`: a share engagement of `member_id` at
    /// `shared_at`. `None` when the share is already older than the scoring window (a replay of
    /// old history): it could only ever be refused, and there is nothing left for it to count.
    pub async fn on_share(
        &self,
        meta: &AppendMeta,
        member_id: &str,
        shared_at: DateTime<Utc>,
    ) -> Result<Option<MemberState>, ServiceError> {
        let now = self.now();
        if shared_at < now - self.rules.koc_window {
            return Ok(None);
        }
        // The referral service's clock may run a little ahead of ours; a share it recorded has
        // happened, so it counts as of now rather than being refused as in the future.
        let occurred_at = shared_at.min(now);
        self.record_engagement(meta, member_id, pb::EngagementKind::Share, occurred_at, now)
            .await
            .map(Some)
    }

    async fn record_engagement(
        &self,
        meta: &AppendMeta,
        member_id: &str,
        kind: pb::EngagementKind,
        occurred_at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<MemberState, ServiceError> {
        let cmd = member::Engage {
            kind,
            occurred_at,
            now,
        };
        self.run(&meta.brand_id, member_id, meta, |m| {
            member::engage(m, &cmd, &self.rules)
        })
        .await
    }

    /// The reaction to a warranty activation: find or create the buyer's member, bind the device,
    /// award activation points. Every id is derived from the activation event, so a redelivered
    /// or replayed event decides nothing new.
    pub async fn on_activation(
        &self,
        meta: &AppendMeta,
        identity: StoredIdentity,
        device_serial: String,
        warranty_code: String,
        event_id: String,
        activated_at: DateTime<Utc>,
    ) -> Result<MemberState, ServiceError> {
        let key = identity_key(&identity)
            .ok_or_else(|| ServiceError::invalid("activation carries no usable buyer identity"))?;
        let member_id = match self.owner_of(&meta.brand_id, &key).await? {
            Some(owner) => owner,
            None => {
                // A buyer no member owns yet: their claim and member streams open now (a
                // concurrent or repeated delivery finds them after one refused write).
                let derived = identity::derived_member_id(&meta.brand_id, &key).to_string();
                self.claims
                    .presume_new(&identity::stream_id(&meta.brand_id, &key));
                match self.claim(meta, &derived, &identity, &key).await? {
                    Ok(()) => {
                        self.members
                            .presume_new(&member::stream_id(&meta.brand_id, &derived));
                        derived
                    }
                    Err(owner) => owner,
                }
            }
        };
        let cmd = member::Activated {
            member_id: member_id.clone(),
            identity,
            device_serial,
            warranty_code,
            event_id,
            activated_at,
            now: self.now(),
        };
        self.run(&meta.brand_id, &member_id, meta, |m| {
            member::on_activation(m, &cmd, &self.rules)
        })
        .await
    }

    /// The timer job's command: what time alone changes for the member of `stream_id` (expired
    /// lots, KOC standing, tier), decided as of now. Safe to run again or concurrently: it
    /// decides from the stream's state, and the conditional append lets one of two runs write.
    pub async fn review(
        &self,
        meta: &AppendMeta,
        stream_id: &str,
    ) -> Result<MemberState, ServiceError> {
        let now = self.now();
        let executed = self
            .members
            .execute(stream_id, meta, |m| {
                Ok::<_, Rejection>(member::tick(m, now, &self.rules))
            })
            .await?;
        Ok(MemberState {
            member: executed.state,
            version: executed.version,
        })
    }

    async fn run<F>(
        &self,
        brand_id: &str,
        member_id: &str,
        meta: &AppendMeta,
        decide: F,
    ) -> Result<MemberState, ServiceError>
    where
        F: Fn(&Member) -> Result<Vec<MembershipEvent>, Rejection>,
    {
        let executed = self
            .members
            .execute(&member::stream_id(brand_id, member_id), meta, decide)
            .await?;
        Ok(MemberState {
            member: executed.state,
            version: executed.version,
        })
    }
}

fn points_command(
    ctx: &RequestContext,
    points: i64,
    reason: &str,
    now: DateTime<Utc>,
) -> member::Points {
    member::Points {
        points,
        reason: reason.to_owned(),
        request_id: ctx.request_id.clone(),
        now,
    }
}
