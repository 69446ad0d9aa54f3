//! Command handling for referrals: the I/O around the pure domain. Commands from the API
//! (links, shares, reviews, campaigns, assists) and the reactions' commands (attributing a sale,
//! a returned purchase) both run here.

use chrono::{DateTime, Utc};
use scanloop_eventstore::{AppendMeta, ExecuteError, Executed, Outbox, Repository};
use scanloop_pii::IdentityHasher;
use scanloop_proto::referral::v1 as pb;
use scanloop_service::{RequestContext, ServiceError};
use scanloop_storage::DbError;
use scanloop_timers::SharedClock;

use crate::directory::Directory;
use crate::directory::members::MemberFacts;
use crate::domain::assist::{self, Assist, CampaignState};
use crate::domain::attribution::{
    self, Attributions, Outcome, Recorded, Referrer, Sale, Signals, Token,
};
use crate::domain::device::{self, DeviceClaim};
use crate::domain::link::{self, Link};
use crate::domain::node::Node;
use crate::domain::rules::{BindingMode, Rules};
use crate::domain::{ReferralEvent, Rejection};
use crate::forest::node_streams::{NodeReads, NodeStreams};
use crate::forest::{self, Binding, BoundParents, Nodes};

/// Ancestors are walked at most this deep when looking for a cycle (the tree pays two levels;
/// deeper chains are only searched, never paid).
const MAX_ANCESTRY: usize = 32;

/// What a review decided, and when it was recorded.
pub struct Reviewed {
    pub events: Vec<ReferralEvent>,
    pub decided_at: Option<DateTime<Utc>>,
}

pub struct Referrals {
    links: Repository<Link>,
    nodes: Repository<Node>,
    /// Parents already bound, from the node streams: bound once, never changed.
    parents: BoundParents,
    devices: Repository<DeviceClaim>,
    attributions: Repository<Attributions>,
    campaigns: Repository<CampaignState>,
    assists: Repository<Assist>,
    directory: Directory,
    hasher: IdentityHasher,
    rules: Rules,
    share_base_url: String,
    clock: SharedClock,
}

pub fn db_unavailable(error: DbError) -> ServiceError {
    tracing::warn!(%error, "referral tables unavailable");
    ServiceError::Unavailable("referral tables unavailable; retry later".into())
}

impl Referrals {
    pub fn new(
        outbox: Outbox,
        directory: Directory,
        hasher: IdentityHasher,
        rules: Rules,
        share_base_url: String,
        clock: SharedClock,
    ) -> Self {
        Self {
            links: Repository::new(outbox.clone()),
            nodes: Repository::new(outbox.clone()),
            parents: BoundParents::default(),
            devices: Repository::new(outbox.clone()),
            attributions: Repository::new(outbox.clone()),
            campaigns: Repository::new(outbox.clone()),
            assists: Repository::new(outbox),
            directory,
            hasher,
            rules,
            share_base_url: share_base_url.trim_end_matches('/').to_owned(),
            clock,
        }
    }

    pub fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }

    pub fn hasher(&self) -> &IdentityHasher {
        &self.hasher
    }

    pub fn directory(&self) -> &Directory {
        &self.directory
    }

    pub fn share_url(&self, brand_id: &str, token: &str) -> String {
        format!("{}/{brand_id}/r/{token}", self.share_base_url)
    }

    /// A registered member as membership announced them; NOT_FOUND otherwise.
    pub async fn member(
        &self,
        brand_id: &str,
        member_id: &str,
    ) -> Result<MemberFacts, ServiceError> {
        match self
            .directory
            .member(brand_id, member_id)
            .await
            .map_err(db_unavailable)?
        {
            Some(facts) if facts.registered_at.is_some() => Ok(facts),
            _ => Err(ServiceError::NotFound(format!(
                "no member {member_id} (a member registered moments ago is known here within \
                 seconds)"
            ))),
        }
    }

    /// The name a landing page shows for a member: their display name, else a masked id.
    pub async fn display_name(&self, brand_id: &str, member_id: &str) -> String {
        match self.directory.member(brand_id, member_id).await {
            Ok(Some(facts)) if !facts.display_name.is_empty() => facts.display_name,
            _ => scanloop_pii::masked_id(member_id),
        }
    }

    pub async fn link(&self, brand_id: &str, token: &str) -> Result<Link, ServiceError> {
        let loaded = self
            .links
            .load::<Rejection>(&link::stream_id(brand_id, token))
            .await?;
        if !loaded.state.exists() {
            return Err(ServiceError::NotFound(format!(
                "no link with token {token}"
            )));
        }
        Ok(loaded.state)
    }

    pub async fn campaign(
        &self,
        brand_id: &str,
        campaign_id: &str,
    ) -> Result<pb::Campaign, ServiceError> {
        self.campaigns
            .load::<Rejection>(&assist::campaign_stream_id(brand_id, campaign_id))
            .await?
            .state
            .campaign
            .ok_or_else(|| ServiceError::NotFound(format!("no campaign {campaign_id}")))
    }

    pub async fn create_link(
        &self,
        ctx: &RequestContext,
        member_id: &str,
        sku: &str,
        campaign_id: &str,
    ) -> Result<Link, ServiceError> {
        self.member(&ctx.brand_id, member_id).await?;
        if !campaign_id.is_empty() {
            self.campaign(&ctx.brand_id, campaign_id).await?;
        }
        // The token derives from the request id under the deployment's secret: a retry lands on
        // the same stream (and is answered as the first time); nobody can predict a token.
        let mac = self.hasher.request_fingerprint(
            &ctx.brand_id,
            "scanloop.referral.link-token",
            ctx.request_id.as_bytes(),
        );
        let token = link::token_from_mac(&mac)?;
        self.directory
            .register_token(&token, &ctx.brand_id)
            .await
            .map_err(db_unavailable)?;
        let cmd = link::Create {
            url: self.share_url(&ctx.brand_id, &token),
            token: token.clone(),
            member_id: member_id.to_owned(),
            sku: sku.to_owned(),
            campaign_id: campaign_id.to_owned(),
            now: self.now(),
        };
        let executed = self
            .links
            .execute(&link::stream_id(&ctx.brand_id, &token), &ctx.meta(), |l| {
                link::create(l, &cmd)
            })
            .await?;
        Ok(executed.state)
    }

    pub async fn share(
        &self,
        ctx: &RequestContext,
        member_id: &str,
        token: &str,
        channel: pb::ShareChannel,
    ) -> Result<Link, ServiceError> {
        let now = self.now();
        let executed = self
            .links
            .execute(&link::stream_id(&ctx.brand_id, token), &ctx.meta(), |l| {
                link::share(l, member_id, channel, now)
            })
            .await?;
        Ok(executed.state)
    }

    pub async fn revoke_link(
        &self,
        ctx: &RequestContext,
        token: &str,
        reason: &str,
    ) -> Result<Link, ServiceError> {
        let now = self.now();
        let executed = self
            .links
            .execute(&link::stream_id(&ctx.brand_id, token), &ctx.meta(), |l| {
                link::revoke(l, reason, now)
            })
            .await?;
        Ok(executed.state)
    }

    /// The keyed hash a visitor (or buyer) is known by in click records.
    pub fn visitor_hash(&self, brand_id: &str, key: &str) -> String {
        let mac =
            self.hasher
                .request_fingerprint(brand_id, "scanloop.referral.visitor", key.as_bytes());
        data_encoding::HEXLOWER.encode(&mac[..16.min(mac.len())])
    }

    pub async fn define_campaign(
        &self,
        ctx: &RequestContext,
        campaign: pb::Campaign,
    ) -> Result<pb::Campaign, ServiceError> {
        let stream = assist::campaign_stream_id(&ctx.brand_id, &campaign.campaign_id);
        let executed = self
            .campaigns
            .execute(&stream, &ctx.meta(), |c| {
                assist::define(c, campaign.clone())
            })
            .await?;
        executed
            .state
            .campaign
            .ok_or_else(|| ServiceError::Internal("campaign without terms after define".into()))
    }

    pub async fn start_assist(
        &self,
        ctx: &RequestContext,
        member_id: &str,
        campaign_id: &str,
        warranty: pb::WarrantyRef,
    ) -> Result<Assist, ServiceError> {
        let brand = ctx.brand_id.as_str();
        let facts = self.member(brand, member_id).await?;
        let campaign = self.campaign(brand, campaign_id).await?;
        let warranty_stream = format!("warranty-{brand}-{}-{}", warranty.batch_id, warranty.serial);
        let owner = self
            .directory
            .warranty_owner(brand, &warranty_stream)
            .await
            .map_err(db_unavailable)?
            .ok_or_else(|| {
                ServiceError::NotFound(format!(
                    "no activated warranty {} #{} (an activation moments ago is known here \
                     within seconds)",
                    warranty.batch_id, warranty.serial
                ))
            })?;
        if !facts.identities.contains(&owner) {
            return Err(ServiceError::FailedPrecondition(
                "that warranty was activated by someone else: an assist extends the member's \
                 own warranty"
                    .into(),
            ));
        }
        let assist_id = assist::assist_id(brand, member_id, campaign_id);
        let cmd = assist::Start {
            assist_id: assist_id.clone(),
            member_id: member_id.to_owned(),
            campaign,
            warranty,
            now: self.now(),
        };
        let executed = self
            .assists
            .execute(&assist::stream_id(brand, &assist_id), &ctx.meta(), |a| {
                assist::start(a, &cmd)
            })
            .await?;
        self.directory
            .add_warranty_assist(brand, &warranty_stream, &assist_id)
            .await
            .map_err(db_unavailable)?;
        Ok(executed.state)
    }

    pub async fn assist(
        &self,
        brand_id: &str,
        member_id: &str,
        campaign_id: &str,
    ) -> Result<Assist, ServiceError> {
        let assist_id = assist::assist_id(brand_id, member_id, campaign_id);
        let loaded = self
            .assists
            .load::<Rejection>(&assist::stream_id(brand_id, &assist_id))
            .await?;
        if loaded.state.started.is_none() {
            return Err(ServiceError::NotFound(format!(
                "member {member_id} has no assist in campaign {campaign_id}"
            )));
        }
        Ok(loaded.state)
    }

    /// A member's parent, from their node stream (always current).
    pub async fn parent(
        &self,
        brand_id: &str,
        member_id: &str,
    ) -> Result<Option<String>, ServiceError> {
        NodeStreams {
            nodes: &self.nodes,
            parents: &self.parents,
            brand: brand_id,
            meta: AppendMeta::default(),
            reads: NodeReads::Stored,
        }
        .parent(member_id)
        .await
    }

    /// A reviewer's decision on a held attribution, or the revocation of one that counts; an
    /// approval then binds and progresses as an attribution does, a revocation takes the assist
    /// progress back. Answers the decision's events and when it was recorded: for a repeated
    /// request, the first execution's (an approval whose binding found a cycle answers its CYCLE
    /// revocation too).
    pub async fn review(
        &self,
        ctx: &RequestContext,
        warranty_stream_id: &str,
        cmd: attribution::Review,
    ) -> Result<Reviewed, ServiceError> {
        let executed = self
            .attributions
            .execute(
                &attribution::stream_id(warranty_stream_id),
                &ctx.meta(),
                |state| attribution::review(state, &cmd),
            )
            .await?;
        let decided_at = executed.events.last().map(|e| e.occurred_at);
        // Run again on a retry, like the decision's answer: each step is idempotent.
        let mut events = recorded_events(&executed);
        match executed.state.sales.get(&cmd.attribution_id) {
            Some(Recorded::Attributed(a)) => {
                if let Some(rejected) = self.after_attributed(&ctx.meta(), a).await? {
                    events.push(ReferralEvent::ReferralRejected(rejected));
                }
            }
            Some(Recorded::Revoked { rejected, .. })
                if rejected.reason() == pb::RejectionReason::Cycle =>
            {
                events.push(ReferralEvent::ReferralRejected(rejected.clone()));
            }
            Some(Recorded::Revoked { attributed, .. }) => {
                self.after_revoked(&ctx.meta(), attributed).await?;
            }
            _ => {}
        }
        Ok(Reviewed { events, decided_at })
    }

    /// Attributes one sale (the reaction to a WarrantyActivated): decide once, record, then bind
    /// the buyer's parent and progress the referrer's assist. Every step is idempotent, so a
    /// redelivered activation or a crash between steps decides and counts nothing twice.
    pub async fn attribute(&self, meta: &AppendMeta, sale: Sale) -> Result<Outcome, ServiceError> {
        let brand = meta.brand_id.as_str();
        let stream = attribution::stream_id(&sale.warranty_stream_id);
        // A sale's attribution stream opens with it; a redelivery finds it recorded (the
        // record below is decided again on the stored stream when the presumption was wrong).
        self.attributions.presume_new(&stream);
        let recorded = self
            .attributions
            .remembered_or_load::<Rejection>(&stream)
            .await?;
        let outcome = match recorded.state.sales.get(&sale.attribution_id) {
            Some(done) => recorded_outcome(done),
            None => {
                let outcome = self.judge(brand, &sale).await?;
                let outcome = self.claim_device(meta, &sale, outcome).await?;
                let executed = self
                    .attributions
                    .execute(&stream, meta, |state| attribution::record(state, &outcome))
                    .await?;
                // What the stream recorded: a concurrent delivery may have decided first.
                executed
                    .state
                    .sales
                    .get(&sale.attribution_id)
                    .map_or(outcome, recorded_outcome)
            }
        };
        if let Outcome::Attributed(a) = &outcome
            && let Some(rejected) = self.after_attributed(meta, a).await?
        {
            return Ok(Outcome::Rejected(rejected));
        }
        Ok(outcome)
    }

    /// Gathers what the judgement needs and decides. Hard rejections are decided before any
    /// sale is counted toward velocity or bursts.
    async fn judge(&self, brand: &str, sale: &Sale) -> Result<Outcome, ServiceError> {
        let rules = self.rules.for_brand(brand);
        let token = if sale.token.is_empty() {
            None
        } else {
            Some(self.token(brand, &sale.token).await?)
        };
        let referrer = match &token {
            Some(Token::Found(link)) => Some(self.referrer(brand, &link.member_id).await?),
            _ => None,
        };
        let last_click = match &token {
            Some(Token::Found(_)) => self
                .directory
                .last_click(
                    brand,
                    &sale.token,
                    &self.visitor_hash(brand, &sale.buyer_identity_key),
                )
                .await
                .map_err(db_unavailable)?,
            _ => None,
        };
        let mut signals = Signals {
            last_click,
            ..Signals::default()
        };
        let first = attribution::judge(sale, token.as_ref(), referrer.as_ref(), &signals, &rules);
        if matches!(first, Outcome::Rejected(_) | Outcome::Nothing) {
            return Ok(first);
        }
        if let Some(referrer) = &referrer {
            let (hour, day) = self
                .directory
                .referrer_sales(
                    brand,
                    &referrer.member_id,
                    sale.activated_at,
                    &sale.attribution_id,
                )
                .await
                .map_err(db_unavailable)?;
            signals.referrer_last_hour = hour;
            signals.referrer_last_day = day;
        }
        if !sale.store_id.is_empty() {
            signals.store_recent = self
                .directory
                .store_sales(
                    brand,
                    &sale.store_id,
                    sale.activated_at,
                    &sale.attribution_id,
                    rules.store_burst_window,
                )
                .await
                .map_err(db_unavailable)?;
        }
        signals.suspicious_scan = self
            .directory
            .flagged(brand, &sale.warranty_stream_id)
            .await
            .map_err(db_unavailable)?;
        Ok(attribution::judge(
            sale,
            token.as_ref(),
            referrer.as_ref(),
            &signals,
            &rules,
        ))
    }

    /// The token as this brand knows it.
    async fn token(&self, brand: &str, token: &str) -> Result<Token, ServiceError> {
        if !link::is_token(token) {
            return Ok(Token::Unknown);
        }
        let loaded = self
            .links
            .load::<Rejection>(&link::stream_id(brand, token))
            .await?;
        if loaded.state.exists() {
            return Ok(Token::Found(loaded.state));
        }
        let issuer = self
            .directory
            .token_brand(token)
            .await
            .map_err(db_unavailable)?;
        Ok(match issuer {
            Some(other) if other != brand => Token::OtherBrand,
            _ => Token::Unknown,
        })
    }

    /// The link owner's identities, devices and ancestors.
    async fn referrer(&self, brand: &str, member_id: &str) -> Result<Referrer, ServiceError> {
        let facts = self
            .directory
            .member(brand, member_id)
            .await
            .map_err(db_unavailable)?
            .unwrap_or_default();
        let mut ancestors: Vec<String> = Vec::new();
        let mut current = member_id.to_owned();
        while ancestors.len() < MAX_ANCESTRY {
            match self.parent(brand, &current).await? {
                Some(parent) if parent != member_id && !ancestors.contains(&parent) => {
                    ancestors.push(parent.clone());
                    current = parent;
                }
                _ => break,
            }
        }
        Ok(Referrer {
            member_id: member_id.to_owned(),
            identities: facts.identities,
            devices: facts.devices,
            ancestors,
        })
    }

    /// A sale that would pay claims its device; a device another attribution holds turns it
    /// into a SAME_DEVICE rejection.
    async fn claim_device(
        &self,
        meta: &AppendMeta,
        sale: &Sale,
        outcome: Outcome,
    ) -> Result<Outcome, ServiceError> {
        if sale.device_serial.is_empty() || outcome.attribution().is_none() {
            return Ok(outcome);
        }
        let legacy = self
            .devices
            .load::<Rejection>(&device::legacy_stream_id(
                &meta.brand_id,
                &sale.device_serial,
            ))
            .await?
            .state;
        let device_stream = device::stream_id(&meta.brand_id, &sale.device_serial);
        // A device is claimed once, when its first sale is attributed.
        self.devices.presume_new(&device_stream);
        let claimed = self
            .devices
            .execute(&device_stream, meta, |claim| {
                device::claim(claim, &legacy, &sale.device_serial, &sale.attribution_id)
            })
            .await;
        match claimed {
            Ok(_) => Ok(outcome),
            Err(ExecuteError::Rejected(Rejection::AlreadyExists(detail))) => {
                let level1 = outcome
                    .attribution()
                    .map(|a| a.level1_member_id.clone())
                    .unwrap_or_default();
                Ok(attribution::reject(
                    sale,
                    &level1,
                    pb::RejectionReason::SameDevice,
                    detail,
                ))
            }
            Err(other) => Err(other.into()),
        }
    }

    /// What a counted attribution sets off: the buyer's parent (once, by the brand's binding
    /// mode) and the referrer's assist progress. When binding finds that the referrer descends
    /// from the buyer (a cycle closed by a concurrent or later binding), the attribution is
    /// revoked with CYCLE instead, and that rejection is returned.
    async fn after_attributed(
        &self,
        meta: &AppendMeta,
        a: &pb::ReferralAttributed,
    ) -> Result<Option<pb::ReferralRejected>, ServiceError> {
        let brand = meta.brand_id.as_str();
        if a.level1_member_id.is_empty() {
            return Ok(None);
        }
        let activated_at = scanloop_proto::time::from_timestamp(a.activated_at.as_ref())
            .unwrap_or_else(|| self.now());
        if self.binds(brand, &a.buyer_member_id, activated_at).await? {
            let nodes = NodeStreams {
                nodes: &self.nodes,
                parents: &self.parents,
                brand,
                meta: internal(meta),
                reads: NodeReads::Remembered,
            };
            let binding = forest::bind(
                &nodes,
                &a.buyer_member_id,
                &a.level1_member_id,
                &a.attribution_id,
            )
            .await?;
            if let Binding::Cycle { path } = binding {
                return self.revoke_for_cycle(meta, a, &path).await.map(Some);
            }
        }
        if !a.campaign_id.is_empty() {
            let assist_id = assist::assist_id(brand, &a.level1_member_id, &a.campaign_id);
            self.assists
                .execute(&assist::stream_id(brand, &assist_id), meta, |s| {
                    assist::progress(s, &a.attribution_id, activated_at)
                })
                .await?;
        }
        Ok(None)
    }

    /// Records the CYCLE revocation of an attribution whose binding would close a cycle.
    async fn revoke_for_cycle(
        &self,
        meta: &AppendMeta,
        a: &pb::ReferralAttributed,
        path: &[String],
    ) -> Result<pb::ReferralRejected, ServiceError> {
        let detail = format!(
            "the referrer {} descends from the buyer {} ({}): binding would make them each \
             other's ancestors",
            a.level1_member_id,
            a.buyer_member_id,
            path.join(" → ")
        );
        tracing::info!(attribution_id = %a.attribution_id, %detail, "attribution revoked: cycle");
        let executed = self
            .attributions
            .execute(
                &attribution::stream_id(&a.warranty_stream_id),
                &internal(meta),
                |state| attribution::revoke_for_cycle(state, &a.attribution_id, detail.clone()),
            )
            .await?;
        match executed.state.sales.get(&a.attribution_id) {
            Some(Recorded::Revoked { rejected, .. }) => Ok(rejected.clone()),
            _ => Err(ServiceError::Internal(format!(
                "attribution {} was not revoked after its cycle",
                a.attribution_id
            ))),
        }
    }

    /// What a revoked attribution takes back: the referrer's assist progress, as a friend's
    /// return does (an assist that already completed stands). The buyer's parent stays: a parent
    /// is never rebound, and the tree pays only through counted attributions.
    async fn after_revoked(
        &self,
        meta: &AppendMeta,
        a: &pb::ReferralAttributed,
    ) -> Result<(), ServiceError> {
        if a.campaign_id.is_empty() || a.level1_member_id.is_empty() {
            return Ok(());
        }
        let brand = meta.brand_id.as_str();
        let assist_id = assist::assist_id(brand, &a.level1_member_id, &a.campaign_id);
        self.assists
            .execute(&assist::stream_id(brand, &assist_id), meta, |s| {
                assist::take_back(s, &a.attribution_id)
            })
            .await?;
        Ok(())
    }

    /// Whether an attribution at `activated_at` may bind the buyer's parent under the brand's
    /// mode. A buyer membership has not announced yet is taken to have become a member with
    /// this activation (activation is how most buyers join).
    async fn binds(
        &self,
        brand: &str,
        buyer: &str,
        activated_at: DateTime<Utc>,
    ) -> Result<bool, ServiceError> {
        let rules = self.rules.for_brand(brand);
        if rules.binding_mode == BindingMode::FirstAttribution {
            return Ok(true);
        }
        let registered_at = self
            .directory
            .member(brand, buyer)
            .await
            .map_err(db_unavailable)?
            .and_then(|m| m.registered_at);
        Ok(rules.binds_at_registration(registered_at, activated_at))
    }

    /// The reaction to a returned purchase: a friend's return takes their assist progress back;
    /// the return of a warranty an assist is bound to revokes that assist.
    pub async fn on_void(
        &self,
        meta: &AppendMeta,
        warranty_stream_id: &str,
    ) -> Result<(), ServiceError> {
        let brand = meta.brand_id.as_str();
        let recorded = self
            .attributions
            .load::<Rejection>(&attribution::stream_id(warranty_stream_id))
            .await?;
        let latest = recorded
            .state
            .latest
            .as_ref()
            .and_then(|id| recorded.state.sales.get(id));
        if let Some(Recorded::Attributed(a)) = latest
            && !a.campaign_id.is_empty()
            && !a.level1_member_id.is_empty()
        {
            let assist_id = assist::assist_id(brand, &a.level1_member_id, &a.campaign_id);
            self.assists
                .execute(&assist::stream_id(brand, &assist_id), meta, |s| {
                    assist::take_back(s, &a.attribution_id)
                })
                .await?;
        }
        let bound = self
            .directory
            .warranty_assists(brand, warranty_stream_id)
            .await
            .map_err(db_unavailable)?;
        for assist_id in bound {
            self.assists
                .execute(&assist::stream_id(brand, &assist_id), meta, |s| {
                    assist::revoke(s, "the warranty the assist extends was returned")
                })
                .await?;
        }
        Ok(())
    }
}

fn recorded_outcome(recorded: &Recorded) -> Outcome {
    match recorded {
        Recorded::Attributed(a) => Outcome::Attributed(a.clone()),
        Recorded::Held(h) => Outcome::Held(h.clone()),
        Recorded::Rejected(r) | Recorded::Revoked { rejected: r, .. } => {
            Outcome::Rejected(r.clone())
        }
    }
}

fn recorded_events<A>(executed: &Executed<A>) -> Vec<ReferralEvent> {
    use scanloop_eventstore::DomainEvent as _;
    executed
        .events
        .iter()
        .filter_map(|e| ReferralEvent::decode(&e.event_type, e.schema_version, &e.payload).ok())
        .collect()
}

/// Appends beyond a command's first carry no request id: the id is bound to the command's own
/// stream, and a binding's retried claim must append again, not be answered as a repeat.
fn internal(meta: &AppendMeta) -> AppendMeta {
    AppendMeta {
        request: None,
        ..meta.clone()
    }
}
