//! The loop's growth half, steps 1–7: the operator's set-up, a batch of codes, A's activation
//! and membership, A's engagement and share, friends buying through A's link, A's assist, and
//! the second level through D.

use super::calls::{date, phone, step, tier_name};
use crate::cluster::{
    WAIT, amount, check, issue_batch, request_id, short, two_level_plan, until, yuan,
};
use chrono::Utc;
use scanloop_proto::activation::v1 as act;
use scanloop_proto::payouts::v1 as pay;
use scanloop_proto::referral::v1 as refl;
use scanloop_proto::time::{from_timestamp, to_timestamp};
use scanloop_service::access::Role::{Landing, MemberApp, Operator};

use super::Demo;
use super::cast::*;

impl Demo {
    /// The operator's set-up: the commission plan (level 2 only with legal's acknowledgement)
    /// and the assist campaign.
    pub(super) async fn set_up(&self) -> anyhow::Result<()> {
        step(
            1,
            "The brand's operator sets the commission plan and an assist campaign",
        );
        let plan = self
            .cluster
            .payouts(Operator)
            .upsert_plan(two_level_plan(
                &self.brand,
                (LEVEL1_BPS, LEVEL2_BPS),
                1,
                pay::ComplianceAcknowledgement {
                    acknowledged_by: "legal@brand.example".into(),
                    acknowledged_at: None,
                    statement: "two levels of commission on verified sales only (CPS), \
                                reviewed by counsel"
                        .into(),
                },
            ))
            .await?
            .into_inner();
        check(
            plan.version == 1,
            format!("a new plan is version 1: {plan:?}"),
        )?;
        println!(
            "   plan v{}: level 1 5%, level 2 2% (acknowledged by {}), return window {} day, \
             minimum payout {}",
            plan.version,
            plan.level2_acknowledgement
                .as_ref()
                .map_or("-", |a| a.acknowledged_by.as_str()),
            plan.return_window_days,
            yuan(amount(&plan.minimum_payout))
        );
        let campaign = self
            .cluster
            .referral(Operator)
            .define_campaign(refl::DefineCampaignRequest {
                brand_id: self.brand.clone(),
                request_id: request_id(),
                campaign_id: CAMPAIGN.into(),
                name: "邀请3位好友 延保1年 (3 friends → +12 months)".into(),
                goal_friends: 3,
                window_days: 30,
                extension_months: 12,
            })
            .await?
            .into_inner();
        println!(
            "   campaign {}: {} friends within {} days → +{} months of warranty",
            campaign.campaign_id,
            campaign.goal_friends,
            campaign.window_days,
            campaign.extension_months
        );
        Ok(())
    }

    pub(super) async fn issue_batch(&self) -> anyhow::Result<Vec<String>> {
        step(2, "A batch of warranty codes is issued for the print shop");
        let (batch_id, codes) = issue_batch(
            &self.cluster.activation(Operator),
            act::IssueBatchRequest {
                brand_id: self.brand.clone(),
                request_id: request_id(),
                sku: SKU.into(),
                product_model: "X9 Pro 5G phone".into(),
                warranty_months: 24,
                quantity: 100,
                key_id: "k2026".into(),
            },
        )
        .await?;
        check(
            codes.len() == 100,
            format!("{} codes, not 100", codes.len()),
        )?;
        println!(
            "   batch {}: 100 codes for SKU {SKU}, 24 months, e.g. {}",
            short(&batch_id),
            codes[0]
        );
        Ok(codes)
    }

    /// A scans the code on the box and activates the warranty; membership makes A a member.
    pub(super) async fn first_buyer(&mut self, code: &str) -> anyhow::Result<String> {
        step(3, "Buyer A scans the code and activates the warranty");
        let scan = self
            .cluster
            .activation(Landing)
            .scan_code(act::ScanCodeRequest {
                brand_id: self.brand.clone(),
                request_id: request_id(),
                code: code.into(),
                region: "440300".into(),
                scanned_at: Some(to_timestamp(Utc::now())),
            })
            .await?
            .into_inner();
        check(!scan.suspicious, "a first scan is not suspicious")?;
        let warranty = self.activate(&A, code, "").await?;
        self.a_warranty_ends = warranty.warranty_ends_at;
        println!(
            "   A's warranty: {} bought {}, until {}",
            yuan(A.amount_fen),
            date(warranty.purchased_at.as_ref()),
            date(warranty.warranty_ends_at.as_ref())
        );
        let a = self.member_id(&A).await?;
        let member = self.member(&a, |m| m.points_balance > 0).await?;
        check(
            member.points_balance == 100 && member.tier == "member",
            format!("A has 100 activation points as a member: {member:?}"),
        )?;
        println!(
            "   A is member {}: {} points, tier {}",
            short(&a),
            member.points_balance,
            tier_name(&member.tier)
        );
        Ok(a)
    }

    /// A creates a campaign link, shares it, engages until KOC, and draws the link's QR card.
    pub(super) async fn a_shares(&self, a: &str) -> anyhow::Result<refl::ReferralLink> {
        step(
            4,
            "A engages until KOC (初级分享官) and shares a link with its QR card",
        );
        let link = self.link_for(a, CAMPAIGN).await?;
        let warranty = self.warranty(&A).await?;
        let start = refl::StartAssistRequest {
            brand_id: self.brand.clone(),
            request_id: request_id(),
            member_id: a.into(),
            campaign_id: CAMPAIGN.into(),
            warranty: Some(refl::WarrantyRef {
                batch_id: warranty.batch_id.clone(),
                serial: warranty.serial,
            }),
        };
        let referral = self.cluster.referral(MemberApp);
        let assist = until(
            "A's assist starts",
            WAIT,
            || {
                let (mut referral, start) = (referral.clone(), start.clone());
                async move { referral.start_assist(start).await.map(|r| r.into_inner()) }
            },
            |_| true,
        )
        .await?;
        println!(
            "   link {} (campaign {CAMPAIGN}); assist {}/{} friends",
            link.url, assist.progress, assist.goal
        );

        let member = self
            .cluster
            .engage_as_koc(&self.brand, a, &link.token)
            .await?;
        check(
            member.tier == "junior_sharer"
                && (
                    member.window_scans,
                    member.window_shares,
                    member.window_comments,
                ) == (3, 2, 5),
            format!("A is a KOC, 初级分享官, with 3 scans, 2 shares, 5 comments: {member:?}"),
        )?;
        println!(
            "   A: {} scans, {} shares, {} comments in 30 days → KOC, tier {}, score {}",
            member.window_scans,
            member.window_shares,
            member.window_comments,
            tier_name(&member.tier),
            member.koc_score
        );

        let card = referral
            .clone()
            .render_card(refl::RenderCardRequest {
                brand_id: self.brand.clone(),
                token: link.token.clone(),
                size_px: 512,
            })
            .await?
            .into_inner();
        check(
            card.png.starts_with(b"\x89PNG") && card.svg.contains("<svg") && card.url == link.url,
            "the share card is a PNG and an SVG of the link",
        )?;
        std::fs::create_dir_all(&self.out)?;
        let png = self.out.join(format!("{}-A-share-card.png", self.brand));
        std::fs::write(&png, &card.png)?;
        std::fs::write(png.with_extension("svg"), &card.svg)?;
        println!(
            "   share card (QR of the link, referrer {}): {}",
            card.referrer,
            png.display()
        );
        Ok(link)
    }

    /// B, C and D open A's link and buy: three attributions, A the parent of each.
    pub(super) async fn friends_buy_through(
        &mut self,
        a: &str,
        link: &refl::ReferralLink,
        codes: &[String],
    ) -> anyhow::Result<()> {
        step(5, "Friends B, C and D open A's link, buy and activate");
        for (friend, code) in [&B, &C, &D].into_iter().zip(codes) {
            let landing = self
                .cluster
                .referral(Landing)
                .resolve_link(refl::ResolveLinkRequest {
                    brand_id: self.brand.clone(),
                    token: link.token.clone(),
                    visitor: phone(friend.phone),
                    visitor_key: String::new(),
                    channel: refl::ShareChannel::WechatMoments as i32,
                })
                .await?
                .into_inner();
            check(landing.active, "A's link is active")?;
            self.activate(friend, code, &link.token).await?;
            self.member_id(friend).await?;
        }
        let mut referrals = self.referrals_of(a, 3).await?;
        referrals.sort_by_key(|r| self.name(&r.buyer_member_id));
        for referral in &referrals {
            check(
                referral.level2_member_id.is_empty()
                    && amount(&referral.purchase_amount) == 399_900,
                format!("a level-1 referral of ¥3,999.00 with no level 2: {referral:?}"),
            )?;
            println!(
                "   attribution {}: {} bought for {} through A's link → level 1 A",
                short(&referral.attribution_id),
                self.name(&referral.buyer_member_id),
                yuan(amount(&referral.purchase_amount))
            );
        }
        let referral = self.cluster.referral(MemberApp);
        for friend in [&B, &C, &D] {
            let id = self.member_id(friend).await?;
            let tree = self
                .tree(&referral, &id, |t| !t.parent_member_id.is_empty())
                .await?;
            check(
                tree.parent_member_id == a,
                format!("{}'s parent is A: {tree:?}", friend.name),
            )?;
        }
        let tree = self.tree(&referral, a, |t| t.level1_count == 3).await?;
        println!(
            "   the tree: A has {} members on level 1 (B, C, D); each one's parent is A",
            tree.level1_count
        );
        Ok(())
    }

    pub(super) async fn assist_completes(&self, a: &str) -> anyhow::Result<()> {
        step(
            6,
            "A's assist campaign completes: A's warranty moves 12 months",
        );
        let after = until(
            "A's warranty extended by the assist",
            WAIT,
            || self.get_warranty(&A),
            |w| w.extended_months == 12,
        )
        .await?;
        let assist = self
            .cluster
            .referral(MemberApp)
            .get_assist(refl::GetAssistRequest {
                brand_id: self.brand.clone(),
                member_id: a.into(),
                campaign_id: CAMPAIGN.into(),
            })
            .await?
            .into_inner();
        check(
            assist.status == refl::AssistStatus::Completed as i32 && assist.progress == 3,
            format!("the assist completed with 3 friends: {assist:?}"),
        )?;
        let (was, now) = (
            from_timestamp(self.a_warranty_ends.as_ref()),
            from_timestamp(after.warranty_ends_at.as_ref()),
        );
        // Stored times have millisecond precision.
        let expected = was.and_then(|w| w.checked_add_months(chrono::Months::new(12)));
        check(
            expected.map(|t| t.timestamp_millis()) == now.map(|t| t.timestamp_millis()),
            format!("the end moved exactly 12 months: {was:?} → {now:?}"),
        )?;
        println!(
            "   assist {}/{} completed; A's warranty ends {} instead of {}",
            assist.progress,
            assist.goal,
            date(after.warranty_ends_at.as_ref()),
            date(self.a_warranty_ends.as_ref())
        );
        Ok(())
    }

    /// D shares a link of their own; E buys through it: level 1 for D, level 2 for A.
    pub(super) async fn second_level(
        &mut self,
        a: &str,
        d: &str,
        code: &str,
    ) -> anyhow::Result<()> {
        step(
            7,
            "D shares a link; E buys through it: level 1 for D, level 2 for A",
        );
        let link = self.link_for(d, "").await?;
        self.activate(&E, code, &link.token).await?;
        self.member_id(&E).await?;
        let referrals = self.referrals_of(d, 1).await?;
        check(
            referrals[0].level2_member_id == a,
            format!("E's sale has A on level 2: {:?}", referrals[0]),
        )?;
        let tree = self
            .tree(&self.cluster.referral(MemberApp), a, |t| {
                t.level2_count == 1
            })
            .await?;
        println!(
            "   attribution {}: E bought for {} → level 1 D, level 2 A (A's tree: {} on level 1, \
             {} on level 2)",
            short(&referrals[0].attribution_id),
            yuan(E.amount_fen),
            tree.level1_count,
            tree.level2_count
        );
        Ok(())
    }
}
