//! `scanloop demo loop`: the seed's whole growth loop for one brand, against the four running
//! services, narrated step by step. Every step's result is checked against what the loop should
//! produce, with fixed expected values; the command fails at the first step that differs.
//!
//! The story: a batch is issued; A buys, activates and becomes a member; A engages until KOC
//! (初级分享官), shares a campaign link and its QR card; friends B, C and D buy through it (three
//! attributions, A their parent, A's assist completes: +12 months); D shares and E buys through
//! D's link (level 1 for D, level 2 for A); C returns the phone inside the window (C's commission
//! reversed); the window passes, finance settles and pays, statements and the ledger check,
//! and finance's reconciliation of every account and batch against the events.
//!
//! Time: the plan's return window is one day and the demo's purchases are dated one day ago less
//! `--window-lead-secs`, so the window closes a minute or two into the demo and the vesting
//! timers fire on the services' real clocks, with nothing faked in the services.

use std::collections::BTreeMap;
use std::path::PathBuf;

mod calls;

use crate::cluster::{
    Addrs, Cluster, WAIT, amount, check, identity, issue_batch, request_id, short, two_level_plan,
    until, yuan,
};
use calls::{date, member, phone, role_name, step, tier_name, time};
use chrono::{DateTime, Utc};
use scanloop_proto::activation::v1 as act;
use scanloop_proto::common::v1::PageRequest;
use scanloop_proto::membership::v1 as mem;
use scanloop_proto::payouts::v1 as pay;
use scanloop_proto::referral::v1 as refl;
use scanloop_proto::time::{from_timestamp, to_timestamp};
use scanloop_service::access::Role::{Auditor, Finance, Landing, MemberApp, Operator};

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    addrs: Addrs,
    /// The brand the demo acts for; default a new one per run (`demo-<time>`), so the demo can
    /// run again on the same cluster.
    #[arg(long)]
    brand: Option<String>,
    /// Where the share card is written.
    #[arg(long, default_value = ".devstack/demo")]
    out: PathBuf,
    /// Seconds from the demo's start until the return window of its purchases closes.
    #[arg(long, default_value_t = 90)]
    window_lead_secs: u32,
    /// The payouts topic finance's reconciliation reads the brand's events from.
    #[arg(
        long,
        env = "SCANLOOP_PAYOUTS_TOPIC",
        default_value = "scanloop.payouts.events.v1"
    )]
    payouts_topic: String,
}

/// A buyer in the story.
struct Buyer {
    name: &'static str,
    phone: &'static str,
    device_serial: &'static str,
    amount_fen: i64,
}

const A: Buyer = buyer("A", "13800000001", "X9-26-000101", 399_900);
const B: Buyer = buyer("B", "13800000002", "X9-26-000102", 399_900);
const C: Buyer = buyer("C", "13800000003", "X9-26-000103", 399_900);
const D: Buyer = buyer("D", "13800000004", "X9-26-000104", 399_900);
const E: Buyer = buyer("E", "13800000005", "X9-26-000105", 599_900);

const fn buyer(name: &'static str, phone: &'static str, serial: &'static str, fen: i64) -> Buyer {
    Buyer {
        name,
        phone,
        device_serial: serial,
        amount_fen: fen,
    }
}

const SKU: &str = "X9";
const CAMPAIGN: &str = "three-friends";
/// The plan: 5% to the link's owner, 2% to the owner's parent.
const LEVEL1_BPS: u32 = 500;
const LEVEL2_BPS: u32 = 200;
/// 5% and 2% of ¥3,999.00 and ¥5,999.00 (floored to the fen).
const L1_ON_3999: i64 = 19_995;
const L1_ON_5999: i64 = 29_995;
const L2_ON_5999: i64 = 11_998;
/// What each is owed once C's return is reversed: A level 1 on B and D, level 2 on E; D level
/// 1 on E.
const OWED_A: i64 = 2 * L1_ON_3999 + L2_ON_5999;
const OWED_D: i64 = L1_ON_5999;

pub async fn run(args: Args) -> anyhow::Result<()> {
    // A purchase may not be dated before its batch's issue less a day, nor in the future.
    anyhow::ensure!(
        (1..=3_600).contains(&args.window_lead_secs),
        "--window-lead-secs is 1 ..= 3600 (the purchases are dated a day ago less this)"
    );
    let brand = args
        .brand
        .unwrap_or_else(|| format!("demo-{}", Utc::now().format("%Y%m%d-%H%M%S")));
    let started = Utc::now();
    let window_closes = started + chrono::Duration::seconds(i64::from(args.window_lead_secs));
    let demo = Demo {
        cluster: Cluster::connect(&args.addrs, std::slice::from_ref(&brand)).await?,
        brand,
        purchased_at: window_closes - chrono::Duration::days(1),
        window_closes,
        out: args.out,
        payouts_topic: args.payouts_topic,
        members: BTreeMap::new(),
        codes: BTreeMap::new(),
        a_warranty_ends: None,
    };
    demo.run().await
}

struct Demo {
    cluster: Cluster,
    brand: String,
    /// Every purchase's date: the return window (one day) closes at `window_closes`.
    purchased_at: DateTime<Utc>,
    window_closes: DateTime<Utc>,
    out: PathBuf,
    payouts_topic: String,
    /// Member id → buyer name, and buyer name → the code they activated.
    members: BTreeMap<String, &'static str>,
    codes: BTreeMap<&'static str, String>,
    /// A's warranty end as activated, before the assist moves it.
    a_warranty_ends: Option<prost_types::Timestamp>,
}

impl Demo {
    async fn run(mut self) -> anyhow::Result<()> {
        println!("The growth loop for brand {}, step by step.\n", self.brand);
        self.set_up().await?;
        let codes = self.issue_batch().await?;
        let a = self.first_buyer(&codes[0]).await?;
        let link = self.a_shares(&a).await?;
        self.friends_buy_through(&a, &link, &codes[1..4]).await?;
        self.assist_completes(&a).await?;
        let d = self.member_id(&D).await?;
        self.second_level(&a, &d, &codes[4]).await?;
        self.commissions_accrue(&a, &d).await?;
        self.c_returns(&a).await?;
        self.window_passes(&a, &d).await?;
        let paid = self.settle_and_pay(&a, &d).await?;
        self.statements(&a, &d).await?;
        self.ledger_balances().await?;
        self.reconciliation().await?;
        self.figures(&a, &d, paid).await?;
        Ok(())
    }

    /// What finance runs before paying and at each period's close (`scanloop payouts
    /// reconcile`): every account and batch recomputed from the payouts events alone agrees with
    /// the read models. A read model still catching up shows as a difference, so it is asked
    /// again until they agree.
    async fn reconciliation(&self) -> anyhow::Result<()> {
        step(
            14,
            "Finance's reconciliation: accounts and batches recomputed from the events alone",
        );
        let brokers = scanloop_config::Infra::from_env()?.kafka_brokers;
        let topic = &self.payouts_topic;
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let report = scanloop_payouts::reconcile::check(
                &brokers,
                topic,
                &self.brand,
                self.cluster.payouts(Finance),
            )
            .await?;
            if report.differences.is_empty() {
                println!(
                    "   {} events on {} streams: {} accounts and {} batch(es) agree with the \
                     read models; the ledger sums to 0",
                    report.events, report.streams, report.accounts, report.batches
                );
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                for difference in &report.differences {
                    println!("   DIFFERENCE {difference}");
                }
                anyhow::bail!("the events and the read models still differ after {WAIT:?}");
            }
            tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        }
    }

    /// The operator's set-up: the commission plan (level 2 only with legal's acknowledgement)
    /// and the assist campaign.
    async fn set_up(&self) -> anyhow::Result<()> {
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

    async fn issue_batch(&self) -> anyhow::Result<Vec<String>> {
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
    async fn first_buyer(&mut self, code: &str) -> anyhow::Result<String> {
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
    async fn a_shares(&self, a: &str) -> anyhow::Result<refl::ReferralLink> {
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
    async fn friends_buy_through(
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

    async fn assist_completes(&self, a: &str) -> anyhow::Result<()> {
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
    async fn second_level(&mut self, a: &str, d: &str, code: &str) -> anyhow::Result<()> {
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

    async fn commissions_accrue(&self, a: &str, d: &str) -> anyhow::Result<()> {
        step(
            8,
            "Commissions accrue on the four attributed sales (pending until the window)",
        );
        let of_a = self.commissions(a, |c| c.len() == 4).await?;
        let of_d = self.commissions(d, |c| c.len() == 1).await?;
        let mut got: Vec<(i32, i64)> = of_a.iter().map(|c| (c.role, amount(&c.amount))).collect();
        got.sort_unstable();
        let (l1, l2) = (
            pay::CommissionRole::Level1 as i32,
            pay::CommissionRole::Level2 as i32,
        );
        check(
            got == vec![
                (l1, L1_ON_3999),
                (l1, L1_ON_3999),
                (l1, L1_ON_3999),
                (l2, L2_ON_5999),
            ] && amount(&of_d[0].amount) == L1_ON_5999,
            format!("A: 3 × ¥199.95 + ¥119.98, D: ¥299.95: {of_a:?} {of_d:?}"),
        )?;
        let buyers = self.sale_buyers().await?;
        for (who, commission) in of_a
            .iter()
            .map(|c| ("A", c))
            .chain(of_d.iter().map(|c| ("D", c)))
        {
            // Pending until the window closes; on a machine slow enough to reach this step after
            // the window, already vested.
            let status = pay::CommissionStatus::try_from(commission.status);
            check(
                matches!(
                    status,
                    Ok(pay::CommissionStatus::Pending | pay::CommissionStatus::Vested)
                ),
                format!("a new commission is pending or vested: {commission:?}"),
            )?;
            println!(
                "   {who}: {} {} of {}'s {} sale, {}, vests {}",
                role_name(commission.role),
                yuan(amount(&commission.amount)),
                buyers
                    .get(&commission.attribution_id)
                    .copied()
                    .unwrap_or("?"),
                yuan(amount(&commission.purchase_amount)),
                status.map_or("?", |s| if s == pay::CommissionStatus::Pending {
                    "pending"
                } else {
                    "vested"
                }),
                time(commission.vests_at.as_ref())
            );
        }
        Ok(())
    }

    async fn c_returns(&mut self, a: &str) -> anyhow::Result<()> {
        step(
            9,
            "C returns the phone inside the window: C's commission is reversed",
        );
        let voided = self
            .cluster
            .activation(Operator)
            .void_warranty(act::VoidWarrantyRequest {
                brand_id: self.brand.clone(),
                request_id: request_id(),
                code: self.codes[C.name].clone(),
                reason: "七天无理由退货: returned within 7 days".into(),
            })
            .await?
            .into_inner();
        check(
            voided.status == act::WarrantyStatus::Voided as i32,
            "C's warranty is voided",
        )?;
        let c = self.member_id(&C).await?;
        let reversed = pay::CommissionStatus::Reversed as i32;
        let of_a = self
            .commissions(a, |list| list.iter().any(|x| x.status == reversed))
            .await?;
        let on_c: Vec<_> = of_a.iter().filter(|x| x.status == reversed).collect();
        check(
            on_c.len() == 1
                && amount(&on_c[0].amount) == 0
                && amount(&on_c[0].accrued) == L1_ON_3999,
            format!("one commission of A reversed from ¥199.95 to nothing: {of_a:?}"),
        )?;
        check(
            self.sale_buyers().await?.get(&on_c[0].attribution_id) == Some(&C.name),
            "the reversed commission is on C's sale",
        )?;
        println!(
            "   C (member {}) returned the phone; A's level 1 on it: {} → {} reversed",
            short(&c),
            yuan(amount(&on_c[0].accrued)),
            yuan(amount(&on_c[0].amount))
        );
        Ok(())
    }

    async fn window_passes(&self, a: &str, d: &str) -> anyhow::Result<()> {
        step(
            10,
            "The return window passes: the vesting timers make the rest payable",
        );
        println!(
            "   the plan's window is 1 day and the purchases were dated {}, so it closes at {} \
             (the services' own clocks; nothing is faked)",
            time(Some(&to_timestamp(self.purchased_at))),
            time(Some(&to_timestamp(self.window_closes)))
        );
        let wait = (self.window_closes - Utc::now())
            .to_std()
            .unwrap_or_default()
            + WAIT;
        for (who, id, owed) in [("A", a, OWED_A), ("D", d, OWED_D)] {
            let account = self
                .account(id, wait, |x| {
                    amount(&x.payable) == owed && amount(&x.pending) == 0
                })
                .await?;
            println!(
                "   {who}: payable {}, pending {}",
                yuan(amount(&account.payable)),
                yuan(amount(&account.pending))
            );
        }
        Ok(())
    }

    /// Finance runs the settlement and pays each line; returns what was paid.
    async fn settle_and_pay(&self, a: &str, d: &str) -> anyhow::Result<i64> {
        step(11, "Finance settles the brand and pays the batch");
        let payouts = self.cluster.payouts(Finance);
        let batch = payouts
            .clone()
            .run_settlement(pay::RunSettlementRequest {
                brand_id: self.brand.clone(),
                request_id: request_id(),
                // Everything vested until now.
                cutoff: Some(to_timestamp(Utc::now())),
            })
            .await?
            .into_inner();
        check(
            batch.lines_count == 2
                && batch.commissions == 4
                && amount(&batch.total) == OWED_A + OWED_D,
            format!("2 lines, 4 commissions, ¥819.83: {batch:?}"),
        )?;
        println!(
            "   batch {}: {} lines, {} commissions, total {}",
            short(&batch.batch_id),
            batch.lines_count,
            batch.commissions,
            yuan(amount(&batch.total))
        );
        let request = pay::GetSettlementRequest {
            brand_id: self.brand.clone(),
            batch_id: batch.batch_id.clone(),
            page: Some(PageRequest {
                page_size: 100,
                page_token: String::new(),
            }),
        };
        let shown = until(
            "the settled batch",
            WAIT,
            || {
                let (mut payouts, request) = (payouts.clone(), request.clone());
                async move {
                    payouts
                        .get_settlement(request)
                        .await
                        .map(|r| r.into_inner())
                }
            },
            |b| b.lines.len() == 2 && b.status == pay::BatchStatus::Completed as i32,
        )
        .await?;
        let mut paid = 0;
        for (i, line) in shown.lines.iter().enumerate() {
            let beneficiary = line.beneficiary.clone().unwrap_or_default();
            let owed = if beneficiary.id == a { OWED_A } else { OWED_D };
            check(
                [a, d].contains(&beneficiary.id.as_str()) && amount(&line.amount) == owed,
                format!("a line for A or D with what they are owed: {line:?}"),
            )?;
            let reference = format!("DEMO-BANK-{:04}", i + 1);
            let marked = payouts
                .clone()
                .mark_paid(pay::MarkPaidRequest {
                    brand_id: self.brand.clone(),
                    request_id: request_id(),
                    batch_id: batch.batch_id.clone(),
                    beneficiary: Some(beneficiary.clone()),
                    reference: reference.clone(),
                })
                .await?
                .into_inner();
            check(
                marked.status == pay::LineStatus::Paid as i32,
                "the line is paid",
            )?;
            paid += amount(&marked.amount);
            println!(
                "   {} ({}): {} from {} commissions, paid, bank reference {reference}",
                self.name(&beneficiary.id),
                line.masked_identity,
                yuan(amount(&line.amount)),
                line.commissions
            );
        }
        Ok(paid)
    }

    async fn statements(&self, a: &str, d: &str) -> anyhow::Result<()> {
        step(12, "Statements for A and D");
        let payouts = self.cluster.payouts(MemberApp);
        for (who, id, owed) in [("A", a, OWED_A), ("D", d, OWED_D)] {
            let request = pay::GetStatementRequest {
                brand_id: self.brand.clone(),
                beneficiary: member(id),
                from: Some(to_timestamp(self.purchased_at - chrono::Duration::days(1))),
                to: Some(to_timestamp(Utc::now() + chrono::Duration::minutes(1))),
            };
            let settled = |s: &pay::Statement| {
                amount(&s.paid) == owed
                    && amount(&s.opening_balance) == 0
                    && amount(&s.closing_balance) == 0
            };
            // Statements are read from the ledger's projection, which follows the payment a
            // moment after MarkPaid answers: wait for it, and say what was last seen if not.
            let statement = until(
                &format!(
                    "{who}'s statement: paid {}, owing and owed nothing",
                    yuan(owed)
                ),
                WAIT,
                || {
                    let (mut payouts, request) = (payouts.clone(), request.clone());
                    async move { payouts.get_statement(request).await.map(|r| r.into_inner()) }
                },
                settled,
            )
            .await?;
            println!(
                "   {who}: opening {}, paid {}, closing {}",
                yuan(amount(&statement.opening_balance)),
                yuan(amount(&statement.paid)),
                yuan(amount(&statement.closing_balance))
            );
            for line in &statement.lines {
                println!(
                    "      {}  {:>10}  {}",
                    time(line.at.as_ref()),
                    yuan(amount(&line.amount)),
                    line.description
                );
            }
        }
        Ok(())
    }

    async fn ledger_balances(&self) -> anyhow::Result<()> {
        step(
            13,
            "The ledger check: every account of the brand sums to zero",
        );
        let ledger = self
            .cluster
            .payouts(Finance)
            .check_ledger(pay::CheckLedgerRequest {
                brand_id: self.brand.clone(),
            })
            .await?
            .into_inner();
        check(
            ledger.balanced && ledger.sum_fen == 0,
            format!("the ledger balances: {ledger:?}"),
        )?;
        for account in &ledger.accounts {
            println!(
                "   {:<28} {:>12}",
                account.account,
                yuan(account.balance_fen)
            );
        }
        println!(
            "   {} postings, sum {} → balanced",
            ledger.postings,
            yuan(ledger.sum_fen)
        );
        Ok(())
    }

    async fn figures(&self, a: &str, d: &str, paid: i64) -> anyhow::Result<()> {
        step(15, "What the growth team sees");
        let mut activations = 0;
        let mut returned = 0;
        for buyer in [&A, &B, &C, &D, &E] {
            let warranty = self.warranty(buyer).await?;
            activations += usize::from(warranty.activated_at.is_some());
            if warranty.status == act::WarrantyStatus::Voided as i32 {
                returned += 1;
            }
        }
        let membership = self.cluster.membership(Auditor);
        let mut members = 0;
        let mut kocs = 0;
        for buyer in [&A, &B, &C, &D, &E] {
            let member = membership
                .clone()
                .get_member(mem::GetMemberRequest {
                    brand_id: self.brand.clone(),
                    by: Some(mem::get_member_request::By::Identity(identity(buyer.phone))),
                })
                .await?
                .into_inner();
            members += 1;
            kocs += usize::from(member.koc_qualified);
        }
        // The funnel counters are a projection too: wait until they show the four sales and two
        // shares, so a slow consumer is told apart from a wrong count (the last answer is shown).
        let referral = self.cluster.referral(Auditor);
        let request = refl::GetStatsRequest {
            brand_id: self.brand.clone(),
            member_id: String::new(),
        };
        let stats = until(
            "the brand's funnel: 4 attributed sales, 2 shares",
            WAIT,
            || {
                let (mut referral, request) = (referral.clone(), request.clone());
                async move {
                    referral
                        .get_stats(request)
                        .await
                        .map(|r| r.into_inner().total.unwrap_or_default())
                }
            },
            |total| total.attributed == 4 && total.shares == 2,
        )
        .await?;
        let mut reversals = 0;
        for id in [a, d] {
            let commissions = self.commissions(id, |_| true).await?;
            reversals += commissions
                .iter()
                .filter(|c| c.status == pay::CommissionStatus::Reversed as i32)
                .count();
        }
        println!("   activations      {activations} ({returned} returned)");
        println!("   members          {members}");
        println!("   KOCs             {kocs}");
        println!(
            "   attributed sales {} (link clicks {}, shares {})",
            stats.attributed, stats.clicks, stats.shares
        );
        println!("   commission paid  {}", yuan(paid));
        println!("   reversals        {reversals}");
        check(
            (activations, returned, members, kocs, reversals) == (5, 1, 5, 1, 1),
            "5 activations (1 returned), 5 members, 1 KOC, 1 reversal",
        )?;
        check(
            stats.attributed == 4 && stats.shares == 2 && paid == OWED_A + OWED_D,
            format!("4 attributed sales, 2 shares, ¥819.83 paid: {stats:?}"),
        )?;
        println!("\nThe loop closed: every figure above is as the loop should produce.");
        Ok(())
    }
}
