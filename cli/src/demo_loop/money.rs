//! The loop's money half, steps 8–15: commissions accrue, C's return reverses one, the window
//! passes and vesting makes the rest payable, finance settles and pays, the statements, the
//! ledger check, finance's reconciliation against the events, and the figures.

use super::calls::{member, role_name, step, time};
use crate::cluster::{WAIT, amount, check, identity, request_id, short, until, yuan};
use chrono::Utc;
use scanloop_proto::activation::v1 as act;
use scanloop_proto::common::v1::PageRequest;
use scanloop_proto::membership::v1 as mem;
use scanloop_proto::payouts::v1 as pay;
use scanloop_proto::referral::v1 as refl;
use scanloop_proto::time::to_timestamp;
use scanloop_service::access::Role::{Auditor, Finance, MemberApp, Operator};

use super::Demo;
use super::cast::*;

impl Demo {
    pub(super) async fn commissions_accrue(&self, a: &str, d: &str) -> anyhow::Result<()> {
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

    pub(super) async fn c_returns(&mut self, a: &str) -> anyhow::Result<()> {
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

    pub(super) async fn window_passes(&self, a: &str, d: &str) -> anyhow::Result<()> {
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
    pub(super) async fn settle_and_pay(&self, a: &str, d: &str) -> anyhow::Result<i64> {
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

    pub(super) async fn statements(&self, a: &str, d: &str) -> anyhow::Result<()> {
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

    pub(super) async fn ledger_balances(&self) -> anyhow::Result<()> {
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

    pub(super) async fn figures(&self, a: &str, d: &str, paid: i64) -> anyhow::Result<()> {
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

    /// What finance runs before paying and at each period's close (`scanloop payouts
    /// reconcile`): every account and batch recomputed from the payouts events alone agrees with
    /// the read models. A read model still catching up shows as a difference, so it is asked
    /// again until they agree.
    pub(super) async fn reconciliation(&self) -> anyhow::Result<()> {
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
}
