//! The referral gRPC API: validation, mapping, status codes (through `ServiceError`).

use std::sync::Arc;

use scanloop_proto::common::v1::Money;
use scanloop_proto::referral::v1 as pb;
use scanloop_proto::referral::v1::referral_service_server::ReferralService;
use scanloop_proto::time::to_timestamp;
use scanloop_service::validate::{next_page, page_size, page_token, text, uuid};
use scanloop_service::{Handler, ServiceError};
use tonic::{Request, Response, Status};

use crate::app::{Referrals, db_unavailable};
use crate::card;
use crate::domain::assist::Assist;
use crate::domain::attribution::Review;
use crate::domain::link::{self, Link};
use crate::projections::ReadModels;
use crate::projections::funnel::FunnelDelta;
use crate::projections::links::LinkRow;

/// Level-2 members listed with a tree, at most.
const MAX_LEVEL2_LISTED: u32 = 500;

pub struct Api {
    app: Arc<Referrals>,
    read_models: ReadModels,
    handler: Handler,
}

impl Api {
    pub fn new(app: Arc<Referrals>, read_models: ReadModels) -> Self {
        let handler = Handler::new(app.hasher().clone());
        Self {
            app,
            read_models,
            handler,
        }
    }

    fn link_view(&self, brand_id: &str, link: &Link) -> pb::ReferralLink {
        pb::ReferralLink {
            brand_id: brand_id.to_owned(),
            token: link.token.clone(),
            member_id: link.member_id.clone(),
            url: link.url.clone(),
            sku: link.sku.clone(),
            campaign_id: link.campaign_id.clone(),
            created_at: link.created_at.map(to_timestamp),
            revoked: link.revoked,
            shares: link.shares,
        }
    }

    fn assist_view(&self, assist: &Assist) -> pb::Assist {
        let Some(started) = &assist.started else {
            return pb::Assist::default();
        };
        pb::Assist {
            assist_id: started.assist_id.clone(),
            member_id: started.member_id.clone(),
            campaign_id: started.campaign_id.clone(),
            warranty: started.warranty.clone(),
            status: assist.status(self.app.now()) as i32,
            progress: assist.friends.len() as u32,
            goal: started.goal,
            extension_months: started.extension_months,
            started_at: started.started_at,
            ends_at: started.ends_at,
        }
    }
}

fn member_id(raw: &str) -> Result<String, ServiceError> {
    uuid(raw, "member_id must be a member's UUID")
}

fn token(raw: &str) -> Result<String, ServiceError> {
    let token = raw.trim();
    if link::is_token(token) {
        Ok(token.to_owned())
    } else {
        Err(ServiceError::invalid(
            "token must be a link token: 16 characters of A-Z, a-z, 0-9, '-', '_'",
        ))
    }
}

/// Campaign ids are slugs: they appear in stream ids and URLs.
fn campaign_id(raw: &str) -> Result<String, ServiceError> {
    let ok = !raw.is_empty()
        && raw.len() <= 64
        && raw
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
    if ok {
        Ok(raw.to_owned())
    } else {
        Err(ServiceError::invalid(
            "campaign_id must be 1-64 of a-z, 0-9, '-', '_'",
        ))
    }
}

fn channel(raw: i32) -> Result<pb::ShareChannel, ServiceError> {
    match pb::ShareChannel::try_from(raw) {
        Ok(pb::ShareChannel::Unspecified) | Err(_) => Err(ServiceError::invalid(
            "channel must be WECHAT_CHAT, WECHAT_MOMENTS, WECHAT_GROUP or OTHER",
        )),
        Ok(channel) => Ok(channel),
    }
}

fn link_row_view(brand_id: &str, row: LinkRow) -> pb::ReferralLink {
    pb::ReferralLink {
        brand_id: brand_id.to_owned(),
        token: row.token,
        member_id: row.member_id,
        url: row.url,
        sku: row.sku,
        campaign_id: row.campaign_id,
        created_at: row.created_at.map(to_timestamp),
        revoked: row.revoked,
        shares: row.shares,
    }
}

fn figures(d: FunnelDelta) -> pb::FunnelFigures {
    let count = |n: i64| n.max(0) as u64;
    let visitors = count(d.visitors);
    let attributed = count(d.attributed);
    pb::FunnelFigures {
        clicks: count(d.clicks),
        unique_visitors: visitors,
        shares: count(d.shares),
        attributed,
        held: count(d.held),
        rejected: count(d.rejected),
        conversion_rate: if visitors == 0 {
            0.0
        } else {
            attributed as f64 / visitors as f64
        },
    }
}

#[tonic::async_trait]
impl ReferralService for Api {
    async fn create_link(
        &self,
        request: Request<pb::CreateLinkRequest>,
    ) -> Result<Response<pb::ReferralLink>, Status> {
        self.handler
            .command(request, async |r, ctx| {
                let member = member_id(&r.member_id)?;
                let sku = text("sku", &r.sku, 64)?;
                let campaign = if r.campaign_id.is_empty() {
                    String::new()
                } else {
                    campaign_id(&r.campaign_id)?
                };
                let link = self.app.create_link(&ctx, &member, &sku, &campaign).await?;
                Ok(self.link_view(&r.brand_id, &link))
            })
            .await
    }

    async fn render_card(
        &self,
        request: Request<pb::RenderCardRequest>,
    ) -> Result<Response<pb::ShareCard>, Status> {
        self.handler
            .query(request, async |r| {
                let token = token(&r.token)?;
                let link = self.app.link(&r.brand_id, &token).await?;
                if link.revoked {
                    return Err(ServiceError::FailedPrecondition(
                        "this link was revoked; create a new one for a card".into(),
                    ));
                }
                let rendered = card::render(&link.url, r.size_px)
                    .map_err(|e| ServiceError::invalid(e.to_string()))?;
                let referrer = self.app.display_name(&r.brand_id, &link.member_id).await;
                Ok(pb::ShareCard {
                    url: link.url,
                    referrer,
                    svg: rendered.svg,
                    png: rendered.png,
                })
            })
            .await
    }

    async fn resolve_link(
        &self,
        request: Request<pb::ResolveLinkRequest>,
    ) -> Result<Response<pb::LinkLanding>, Status> {
        self.handler
            .query(request, async |r| {
                let token = token(&r.token)?;
                let visitor_key = text("visitor_key", &r.visitor_key, 128)?;
                if r.channel != 0 {
                    channel(r.channel)?;
                }
                // A known visitor is matched to the buyer later by their identity's keyed hash.
                let visitor = match &r.visitor {
                    Some(identity) => {
                        let stored = self
                            .app
                            .hasher()
                            .stored_identity(&r.brand_id, Some(identity), "visitor")
                            .map_err(|e| ServiceError::InvalidArgument(e.to_string()))?;
                        let key = scanloop_pii::identity_key(&stored).ok_or_else(|| {
                            ServiceError::invalid("visitor must be a phone number or a unionid")
                        })?;
                        Some(self.app.visitor_hash(&r.brand_id, &key))
                    }
                    None if !visitor_key.is_empty() => Some(
                        self.app
                            .visitor_hash(&r.brand_id, &format!("visitor_key:{visitor_key}")),
                    ),
                    None => None,
                };
                let link = self.app.link(&r.brand_id, &token).await?;
                let (counted, first) = match &visitor {
                    Some(visitor) => self
                        .app
                        .directory()
                        .record_click(&r.brand_id, &token, visitor, self.app.now())
                        .await
                        .map_err(db_unavailable)?,
                    // An anonymous visit is a click, never a unique visitor.
                    None => (true, false),
                };
                if counted && !link.revoked {
                    let delta = FunnelDelta {
                        clicks: 1,
                        visitors: i64::from(first),
                        ..FunnelDelta::default()
                    };
                    self.read_models
                        .bump_funnel(&r.brand_id, &link.member_id, &link.sku, delta)
                        .await
                        .map_err(db_unavailable)?;
                }
                let referrer = self.app.display_name(&r.brand_id, &link.member_id).await;
                Ok(pb::LinkLanding {
                    token,
                    referrer,
                    sku: link.sku,
                    campaign_id: link.campaign_id,
                    active: !link.revoked,
                    counted,
                })
            })
            .await
    }

    async fn record_share(
        &self,
        request: Request<pb::RecordShareRequest>,
    ) -> Result<Response<pb::ReferralLink>, Status> {
        self.handler
            .command(request, async |r, ctx| {
                let member = member_id(&r.member_id)?;
                let token = token(&r.token)?;
                let channel = channel(r.channel)?;
                let link = self.app.share(&ctx, &member, &token, channel).await?;
                Ok(self.link_view(&r.brand_id, &link))
            })
            .await
    }

    async fn revoke_link(
        &self,
        request: Request<pb::RevokeLinkRequest>,
    ) -> Result<Response<pb::ReferralLink>, Status> {
        self.handler
            .command(request, async |r, ctx| {
                let token = token(&r.token)?;
                let reason = text("reason", &r.reason, 500)?;
                let link = self.app.revoke_link(&ctx, &token, &reason).await?;
                Ok(self.link_view(&r.brand_id, &link))
            })
            .await
    }

    async fn list_links(
        &self,
        request: Request<pb::ListLinksRequest>,
    ) -> Result<Response<pb::ListLinksResponse>, Status> {
        self.handler
            .query(request, async |r| {
                let member = member_id(&r.member_id)?;
                let page = r.page.as_ref();
                let (rows, next) = self
                    .read_models
                    .links_page(&r.brand_id, &member, page_size(page), page_token(page))
                    .await
                    .map_err(ServiceError::from_page)?;
                Ok(pb::ListLinksResponse {
                    links: rows
                        .into_iter()
                        .map(|row| link_row_view(&r.brand_id, row))
                        .collect(),
                    page: next_page(next),
                })
            })
            .await
    }

    async fn list_held(
        &self,
        request: Request<pb::ListHeldRequest>,
    ) -> Result<Response<pb::ListReferralsResponse>, Status> {
        self.handler
            .query(request, async |r| {
                let page = r.page.as_ref();
                let (referrals, next) = self
                    .read_models
                    .held_page(&r.brand_id, page_size(page), page_token(page))
                    .await
                    .map_err(ServiceError::from_page)?;
                Ok(pb::ListReferralsResponse {
                    referrals,
                    page: next_page(next),
                })
            })
            .await
    }

    async fn review_referral(
        &self,
        request: Request<pb::ReviewReferralRequest>,
    ) -> Result<Response<pb::Referral>, Status> {
        self.handler
            .command(request, async |r, ctx| {
                let attribution_id = uuid(
                    &r.attribution_id,
                    "attribution_id must be a UUID from ListHeld or ListReferrals",
                )?;
                let decision = match pb::ReviewDecision::try_from(r.decision) {
                    Ok(d @ (pb::ReviewDecision::Approve | pb::ReviewDecision::Reject)) => d,
                    _ => return Err(ServiceError::invalid("decision must be APPROVE or REJECT")),
                };
                let reviewer = text("reviewer", &r.reviewer, 100)?;
                if reviewer.is_empty() {
                    return Err(ServiceError::invalid("reviewer is required: who decided"));
                }
                let note = text("note", &r.note, 500)?;
                let stream = self
                    .read_models
                    .referral_stream(&r.brand_id, &attribution_id)
                    .await
                    .map_err(db_unavailable)?
                    .ok_or_else(|| {
                        ServiceError::NotFound(format!("no attribution {attribution_id}"))
                    })?;
                let review = Review {
                    attribution_id: attribution_id.clone(),
                    decision,
                    reviewer,
                    note,
                    now: self.app.now(),
                };
                let reviewed = self.app.review(&ctx, &stream, review).await?;
                let mut referral = self
                    .read_models
                    .referral(&r.brand_id, &attribution_id)
                    .await
                    .map_err(db_unavailable)?
                    .unwrap_or_default();
                // The read model may not have the decision yet: the answer's decision fields come
                // from the decision's events alone, so a repeat answers as the first time.
                referral.decided_at = reviewed.decided_at.map(scanloop_proto::time::to_timestamp);
                for event in reviewed.events {
                    match event {
                        crate::domain::ReferralEvent::ReferralAttributed(_) => {
                            referral.status = pb::ReferralStatus::Attributed as i32;
                            referral.rejection_reason = 0;
                            referral.detail.clear();
                            referral.hold_reasons.clear();
                        }
                        crate::domain::ReferralEvent::ReferralRejected(rejected) => {
                            referral.status = pb::ReferralStatus::Rejected as i32;
                            referral.rejection_reason = rejected.reason;
                            referral.detail = rejected.detail;
                            referral.hold_reasons.clear();
                        }
                        _ => {}
                    }
                }
                referral.attribution_id = attribution_id;
                Ok(referral)
            })
            .await
    }

    async fn define_campaign(
        &self,
        request: Request<pb::DefineCampaignRequest>,
    ) -> Result<Response<pb::Campaign>, Status> {
        self.handler
            .command(request, async |r, ctx| {
                let campaign = pb::Campaign {
                    campaign_id: campaign_id(&r.campaign_id)?,
                    name: text("name", &r.name, 100)?,
                    goal_friends: r.goal_friends,
                    window_days: r.window_days,
                    extension_months: r.extension_months,
                };
                let defined = self.app.define_campaign(&ctx, campaign).await?;
                Ok(defined)
            })
            .await
    }

    async fn start_assist(
        &self,
        request: Request<pb::StartAssistRequest>,
    ) -> Result<Response<pb::Assist>, Status> {
        self.handler
            .command(request, async |r, ctx| {
                let member = member_id(&r.member_id)?;
                let campaign = campaign_id(&r.campaign_id)?;
                let warranty = r.warranty.clone().ok_or_else(|| {
                    ServiceError::invalid(
                        "warranty is required: the batch_id and serial GetWarranty gives",
                    )
                })?;
                let batch = uuid::Uuid::parse_str(warranty.batch_id.trim())
                    .map_err(|_| ServiceError::invalid("warranty.batch_id must be a batch UUID"))?;
                let warranty = pb::WarrantyRef {
                    batch_id: batch.to_string(),
                    serial: warranty.serial,
                };
                let assist = self
                    .app
                    .start_assist(&ctx, &member, &campaign, warranty)
                    .await?;
                Ok(self.assist_view(&assist))
            })
            .await
    }

    async fn get_assist(
        &self,
        request: Request<pb::GetAssistRequest>,
    ) -> Result<Response<pb::Assist>, Status> {
        self.handler
            .query(request, async |r| {
                let member = member_id(&r.member_id)?;
                let campaign = campaign_id(&r.campaign_id)?;
                let assist = self.app.assist(&r.brand_id, &member, &campaign).await?;
                Ok(self.assist_view(&assist))
            })
            .await
    }

    async fn get_tree(
        &self,
        request: Request<pb::GetTreeRequest>,
    ) -> Result<Response<pb::ReferralTree>, Status> {
        self.handler
            .query(request, async |r| {
                let member = member_id(&r.member_id)?;
                // An unknown member has no tree: NOT_FOUND, not an empty one.
                self.app.member(&r.brand_id, &member).await?;
                let page = r.page.as_ref();
                let parent = self.app.parent(&r.brand_id, &member).await?;
                let (level1, next) = self
                    .read_models
                    .children_page(&r.brand_id, &member, 1, page_size(page), page_token(page))
                    .await
                    .map_err(ServiceError::from_page)?;
                let (level2, _) = self
                    .read_models
                    .children_page(&r.brand_id, &member, 2, MAX_LEVEL2_LISTED, "")
                    .await
                    .map_err(ServiceError::from_page)?;
                let level1_count = self
                    .read_models
                    .count_children(&r.brand_id, &member, 1)
                    .await
                    .map_err(db_unavailable)?;
                let level2_count = self
                    .read_models
                    .count_children(&r.brand_id, &member, 2)
                    .await
                    .map_err(db_unavailable)?;
                Ok(pb::ReferralTree {
                    member_id: member,
                    parent_member_id: parent.unwrap_or_default(),
                    level1_member_ids: level1,
                    level2_member_ids: level2,
                    level1_count,
                    level2_count,
                    page: next_page(next),
                })
            })
            .await
    }

    async fn list_referrals(
        &self,
        request: Request<pb::ListReferralsRequest>,
    ) -> Result<Response<pb::ListReferralsResponse>, Status> {
        self.handler
            .query(request, async |r| {
                let referrer = member_id(&r.referrer_member_id)?;
                let page = r.page.as_ref();
                let (referrals, next) = self
                    .read_models
                    .referrals_page(&r.brand_id, &referrer, page_size(page), page_token(page))
                    .await
                    .map_err(ServiceError::from_page)?;
                Ok(pb::ListReferralsResponse {
                    referrals,
                    page: next_page(next),
                })
            })
            .await
    }

    async fn get_stats(
        &self,
        request: Request<pb::GetStatsRequest>,
    ) -> Result<Response<pb::ReferralStats>, Status> {
        self.handler
            .query(request, async |r| {
                let scope = if r.member_id.is_empty() {
                    String::new()
                } else {
                    let member = member_id(&r.member_id)?;
                    self.app.member(&r.brand_id, &member).await?;
                    member
                };
                let rows = self
                    .read_models
                    .funnel(&r.brand_id, &scope)
                    .await
                    .map_err(db_unavailable)?;
                let mut total = FunnelDelta::default();
                for (_, d) in &rows {
                    total.clicks += d.clicks;
                    total.visitors += d.visitors;
                    total.shares += d.shares;
                    total.attributed += d.attributed;
                    total.held += d.held;
                    total.rejected += d.rejected;
                }
                Ok(pb::ReferralStats {
                    member_id: scope,
                    total: Some(figures(total)),
                    by_sku: rows
                        .into_iter()
                        .map(|(sku, d)| pb::SkuFigures {
                            sku,
                            figures: Some(figures(d)),
                        })
                        .collect(),
                })
            })
            .await
    }

    async fn get_store_stats(
        &self,
        request: Request<pb::GetStoreStatsRequest>,
    ) -> Result<Response<pb::StoreStats>, Status> {
        self.handler
            .query(request, async |r| {
                let store = text("store_id", &r.store_id, 64)?;
                if store.is_empty() {
                    return Err(ServiceError::invalid("store_id is required"));
                }
                let (sales, amount, credited) = self
                    .read_models
                    .store(&r.brand_id, &store)
                    .await
                    .map_err(db_unavailable)?;
                Ok(pb::StoreStats {
                    store_id: store,
                    attributed_sales: sales.max(0) as u64,
                    attributed_amount: Some(Money {
                        amount_fen: amount,
                        currency: "CNY".into(),
                    }),
                    store_credited_sales: credited.max(0) as u64,
                })
            })
            .await
    }
}
