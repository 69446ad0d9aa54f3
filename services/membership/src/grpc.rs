//! The membership gRPC API: validation, mapping, status codes (through `ServiceError`).

use std::sync::Arc;

use scanloop_proto::common::v1::BuyerIdentity;
use scanloop_proto::membership::v1 as pb;
use scanloop_proto::membership::v1::membership_service_server::MembershipService;
use scanloop_proto::time::{from_timestamp, to_timestamp};
use scanloop_service::validate::{next_page, page_size, page_token, uuid};
use scanloop_service::{Handler, ServiceError};
use tonic::{Request, Response, Status};

use crate::app::{MemberState, Membership};
use crate::domain::tiers::{Tier, tier_for};
use crate::projections::ReadModels;

pub struct Api {
    app: Arc<Membership>,
    read_models: ReadModels,
    handler: Handler,
}

impl Api {
    pub fn new(app: Arc<Membership>, read_models: ReadModels) -> Self {
        let handler = Handler::new(app.hasher().clone());
        Self {
            app,
            read_models,
            handler,
        }
    }

    /// The member an explicit id or an identity names.
    async fn resolve(
        &self,
        brand_id: &str,
        by: Option<&pb::get_member_request::By>,
    ) -> Result<MemberState, ServiceError> {
        match by {
            Some(pb::get_member_request::By::MemberId(id)) => {
                self.app.get(brand_id, &member_id(id)?).await
            }
            Some(pb::get_member_request::By::Identity(identity)) => {
                let (_, key) = self.app.stored_identity(brand_id, Some(identity))?;
                let owner =
                    self.app.owner_of(brand_id, &key).await?.ok_or_else(|| {
                        ServiceError::NotFound("no member has this identity".into())
                    })?;
                self.app.get(brand_id, &owner).await
            }
            None => Err(ServiceError::invalid("give a member_id or an identity")),
        }
    }

    fn view(&self, brand_id: &str, state: &MemberState) -> pb::Member {
        let m = &state.member;
        let now = self.app.now();
        let rules = self.app.rules();
        let counts = m.counts_at(now, rules);
        // Standing as of now: a quiet member's window empties even before their next event.
        let qualified = crate::domain::member::Member::qualifies(&counts, rules);
        let tier = tier_for(qualified, counts.score, rules);
        pb::Member {
            brand_id: brand_id.to_owned(),
            member_id: m.member_id.clone(),
            identities: m
                .identities
                .iter()
                .filter_map(|k| identity_from_key(k))
                .collect(),
            device_serials: m.devices.clone(),
            display_name: m.display_name.clone(),
            region: m.region.clone(),
            points_balance: m.balance_at(now),
            koc_qualified: qualified,
            tier: tier.id().to_owned(),
            perks: tier.perks().into_iter().map(str::to_owned).collect(),
            registered_at: m.registered_at.map(to_timestamp),
            version: state.version,
            window_scans: counts.scans,
            window_shares: counts.shares,
            window_comments: counts.comments,
            koc_score: counts.score,
        }
    }
}

fn member_id(raw: &str) -> Result<String, ServiceError> {
    uuid(raw, "member_id must be a member's UUID")
}

fn identity_from_key(key: &str) -> Option<BuyerIdentity> {
    use scanloop_proto::common::v1::buyer_identity::Kind;
    let (kind, value) = key.split_once(':')?;
    let kind = match kind {
        "phone_hash" => Kind::PhoneHash(value.to_owned()),
        "wechat_unionid" => Kind::WechatUnionid(value.to_owned()),
        _ => return None,
    };
    Some(BuyerIdentity { kind: Some(kind) })
}

#[tonic::async_trait]
impl MembershipService for Api {
    async fn register_member(
        &self,
        request: Request<pb::RegisterMemberRequest>,
    ) -> Result<Response<pb::Member>, Status> {
        self.handler
            .command(request, async |r, ctx| {
                let (identity, key) = self.app.stored_identity(&r.brand_id, r.identity.as_ref())?;
                let state = self
                    .app
                    .register(
                        &ctx,
                        identity,
                        key,
                        r.display_name.clone(),
                        r.region.trim().to_owned(),
                    )
                    .await?;
                Ok(self.view(&r.brand_id, &state))
            })
            .await
    }

    async fn link_identity(
        &self,
        request: Request<pb::LinkIdentityRequest>,
    ) -> Result<Response<pb::Member>, Status> {
        self.handler
            .command(request, async |r, ctx| {
                let member = member_id(&r.member_id)?;
                let (identity, key) = self.app.stored_identity(&r.brand_id, r.identity.as_ref())?;
                let state = self.app.link(&ctx, &member, identity, key).await?;
                Ok(self.view(&r.brand_id, &state))
            })
            .await
    }

    async fn get_member(
        &self,
        request: Request<pb::GetMemberRequest>,
    ) -> Result<Response<pb::Member>, Status> {
        self.handler
            .query(request, async |r| {
                let state = self.resolve(&r.brand_id, r.by.as_ref()).await?;
                Ok(self.view(&r.brand_id, &state))
            })
            .await
    }

    async fn award_points(
        &self,
        request: Request<pb::AwardPointsRequest>,
    ) -> Result<Response<pb::PointsBalance>, Status> {
        self.handler
            .command(request, async |r, ctx| {
                let member = member_id(&r.member_id)?;
                let state = self.app.award(&ctx, &member, r.points, &r.reason).await?;
                Ok(pb::PointsBalance {
                    member_id: member,
                    balance: state.member.balance_at(self.app.now()),
                })
            })
            .await
    }

    async fn redeem_points(
        &self,
        request: Request<pb::RedeemPointsRequest>,
    ) -> Result<Response<pb::PointsBalance>, Status> {
        self.handler
            .command(request, async |r, ctx| {
                let member = member_id(&r.member_id)?;
                let state = self.app.redeem(&ctx, &member, r.points, &r.reason).await?;
                Ok(pb::PointsBalance {
                    member_id: member,
                    balance: state.member.balance_at(self.app.now()),
                })
            })
            .await
    }

    async fn record_engagement(
        &self,
        request: Request<pb::RecordEngagementRequest>,
    ) -> Result<Response<pb::RecordEngagementResponse>, Status> {
        self.handler
            .command(request, async |r, ctx| {
                let member = member_id(&r.member_id)?;
                let kind = pb::EngagementKind::try_from(r.kind)
                    .map_err(|_| ServiceError::invalid("kind is not a known engagement kind"))?;
                let occurred_at = match &r.occurred_at {
                    None => self.app.now(),
                    Some(at) => from_timestamp(Some(at)).ok_or_else(|| {
                        ServiceError::invalid("occurred_at is not a valid timestamp")
                    })?,
                };
                let state = self.app.engage(&ctx, &member, kind, occurred_at).await?;
                let view = self.view(&r.brand_id, &state);
                Ok(pb::RecordEngagementResponse {
                    koc_qualified: view.koc_qualified,
                    tier: view.tier,
                    koc_score: view.koc_score,
                })
            })
            .await
    }

    async fn list_leaderboard(
        &self,
        request: Request<pb::ListLeaderboardRequest>,
    ) -> Result<Response<pb::ListLeaderboardResponse>, Status> {
        self.handler
            .query(request, async |r| {
                let region = r.region.trim();
                if !(region.is_empty() || scanloop_proto::region::is_division_code(region)) {
                    return Err(ServiceError::invalid(
                        "region must be a 6-digit division code or empty",
                    ));
                }
                let token = page_token(r.page.as_ref());
                let (rows, next) = self
                    .read_models
                    .leaderboard_page(&r.brand_id, region, page_size(r.page.as_ref()), token)
                    .await
                    .map_err(ServiceError::from_page)?;
                Ok(pb::ListLeaderboardResponse {
                    entries: rows
                        .into_iter()
                        .map(
                            |(member_id, koc_score, display_name, tier)| pb::LeaderboardEntry {
                                member_id,
                                display_name: display_name.unwrap_or_default(),
                                koc_score,
                                tier: tier.unwrap_or_default(),
                                region: region.to_owned(),
                            },
                        )
                        .collect(),
                    page: next_page(next),
                })
            })
            .await
    }

    async fn list_points_ledger(
        &self,
        request: Request<pb::ListPointsLedgerRequest>,
    ) -> Result<Response<pb::ListPointsLedgerResponse>, Status> {
        self.handler
            .query(request, async |r| {
                let member = member_id(&r.member_id)?;
                let token = page_token(r.page.as_ref());
                let (rows, next) = self
                    .read_models
                    .ledger_page(&r.brand_id, &member, page_size(r.page.as_ref()), token)
                    .await
                    .map_err(ServiceError::from_page)?;
                Ok(pb::ListPointsLedgerResponse {
                    entries: rows
                        .into_iter()
                        .map(
                            |(version, points, kind, reason, at)| pb::PointsLedgerEntry {
                                points,
                                kind,
                                reason,
                                at: Some(to_timestamp(at)),
                                version: version as u64,
                            },
                        )
                        .collect(),
                    page: next_page(next),
                })
            })
            .await
    }

    async fn list_tiers(
        &self,
        request: Request<pb::ListTiersRequest>,
    ) -> Result<Response<pb::ListTiersResponse>, Status> {
        self.handler
            .query(request, async |_| {
                let rules = self.app.rules();
                Ok(pb::ListTiersResponse {
                    tiers: Tier::ALL
                        .into_iter()
                        .map(|tier| pb::Tier {
                            id: tier.id().to_owned(),
                            name: tier.name().to_owned(),
                            requirement: tier.requirement(rules),
                            perks: tier.perks().into_iter().map(str::to_owned).collect(),
                        })
                        .collect(),
                })
            })
            .await
    }
}
