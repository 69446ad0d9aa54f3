#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The loop's money half end to end, all four services on the devstack: a two-level chain
//! accrues the plan's amounts, time passes the return window, vesting, settlement, payment,
//! statements; returns before and after settlement; the minimum payout.

mod common;

use common::*;
use scanloop_proto::payouts::v1 as pb;

/// 5,999.00 yuan, the harness's purchase: 5% = 299.95 yuan, 2% = 119.98 yuan.
const LEVEL1: i64 = 29_995;
const LEVEL2: i64 = 11_998;

struct Chain {
    /// A (no referrer) → B (A's link) → C (B's link).
    a: String,
    b: String,
    c: String,
    codes: Vec<String>,
}

/// A activates, B buys through A's link, C through B's link. Returns the members.
async fn chain(world: &mut Loop) -> Chain {
    let codes = world.issue(BRAND, 5).await;
    world
        .activate(activation(BRAND, &codes[0], "13800000001", "SN-A", ""))
        .await;
    let a = world.member_of(BRAND, "13800000001").await.member_id;
    let link_a = world.link_for(BRAND, &a, "").await;
    world
        .activate(activation(
            BRAND,
            &codes[1],
            "13800000002",
            "SN-B",
            &link_a.token,
        ))
        .await;
    let b = world.member_of(BRAND, "13800000002").await.member_id;
    let link_b = world.link_for(BRAND, &b, "").await;
    world
        .activate(activation(
            BRAND,
            &codes[2],
            "13800000003",
            "SN-C",
            &link_b.token,
        ))
        .await;
    let c = world.member_of(BRAND, "13800000003").await.member_id;
    Chain { a, b, c, codes }
}

fn amounts(commissions: &[pb::Commission]) -> Vec<(i32, i64, i32)> {
    let mut got: Vec<_> = commissions
        .iter()
        .map(|c| (c.role, amount(&c.amount), c.status))
        .collect();
    got.sort();
    got
}

const PENDING: i32 = pb::CommissionStatus::Pending as i32;
const SETTLED: i32 = pb::CommissionStatus::Settled as i32;
const L1: i32 = pb::CommissionRole::Level1 as i32;
const L2: i32 = pb::CommissionRole::Level2 as i32;

#[tokio::test]
async fn a_two_level_chain_accrues_vests_settles_and_pays() {
    let mut world = Loop::start("payflow").await;
    world
        .payouts
        .upsert_plan(two_level_plan(BRAND, 100))
        .await
        .unwrap();
    let chain = chain(&mut world).await;

    // A earns level 1 on B's purchase and level 2 on C's; B earns level 1 on C's.
    let of_a = world.commissions_of(&chain.a, |c| c.len() == 2).await;
    assert_eq!(
        amounts(&of_a),
        vec![(L1, LEVEL1, PENDING), (L2, LEVEL2, PENDING)]
    );
    assert!(of_a.iter().all(|c| c.plan_version == 1));
    let of_b = world.commissions_of(&chain.b, |c| c.len() == 1).await;
    assert_eq!(amounts(&of_b), vec![(L1, LEVEL1, PENDING)]);
    let account_a = world
        .account(&chain.a, |a| amount(&a.pending) == LEVEL1 + LEVEL2)
        .await;
    assert_eq!(amount(&account_a.payable), 0);

    // Nothing is payable before the window: a settlement now is refused, and no batch exists.
    let early = world.settle("settle-early").await.unwrap_err();
    assert_eq!(early.code(), tonic::Code::FailedPrecondition);
    assert!(early.message().contains("nothing is payable"), "{early:?}");

    // Past the 30-day window the vesting job vests everything.
    world.advance(chrono::Duration::days(31));
    world
        .account(&chain.a, |a| {
            amount(&a.payable) == LEVEL1 + LEVEL2 && amount(&a.pending) == 0
        })
        .await;
    world
        .account(&chain.b, |a| amount(&a.payable) == LEVEL1)
        .await;

    let batch = world.settle("settle-1").await.unwrap();
    assert_eq!(batch.lines_count, 2);
    assert_eq!(batch.commissions, 3);
    assert_eq!(amount(&batch.total), 2 * LEVEL1 + LEVEL2);
    // The same request again answers the same batch and settles nothing twice.
    let again = world.settle_at("settle-1", batch.cutoff).await.unwrap();
    assert_eq!(again.batch_id, batch.batch_id);
    assert_eq!(amount(&again.total), amount(&batch.total));

    let shown = world
        .settlement(&batch.batch_id, |b| {
            b.lines.len() == 2 && b.status == pb::BatchStatus::Completed as i32
        })
        .await;
    let line_a = shown
        .lines
        .iter()
        .find(|l| l.beneficiary.as_ref().unwrap().id == chain.a)
        .unwrap();
    assert_eq!(amount(&line_a.amount), LEVEL1 + LEVEL2);
    assert_eq!(line_a.commissions, 2);

    let paid = world
        .payouts
        .mark_paid(pb::MarkPaidRequest {
            brand_id: BRAND.into(),
            request_id: request_id(),
            batch_id: batch.batch_id.clone(),
            beneficiary: member(&chain.a),
            reference: "BANK-TX-0001".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(paid.status, pb::LineStatus::Paid as i32);
    let account_a = world
        .account(&chain.a, |a| amount(&a.paid) == LEVEL1 + LEVEL2)
        .await;
    assert_eq!(amount(&account_a.balance), 0);
    let account_b = world
        .account(&chain.b, |a| amount(&a.settled_unpaid) == LEVEL1)
        .await;
    assert_eq!(amount(&account_b.balance), LEVEL1);
    let settled = world
        .commissions_of(&chain.a, |c| c.iter().all(|c| c.status == SETTLED))
        .await;
    assert!(settled.iter().all(|c| c.batch_id == batch.batch_id));

    // A's statement over the whole time: from nothing to nothing owed, 419.93 yuan paid.
    let statement = world
        .payouts
        .get_statement(pb::GetStatementRequest {
            brand_id: BRAND.into(),
            beneficiary: member(&chain.a),
            from: Some(scanloop_proto::time::to_timestamp(
                chrono::Utc::now() - chrono::Duration::days(1),
            )),
            to: Some(scanloop_proto::time::to_timestamp(
                chrono::Utc::now() + chrono::Duration::days(1),
            )),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(amount(&statement.opening_balance), 0);
    assert_eq!(amount(&statement.closing_balance), 0);
    assert_eq!(amount(&statement.paid), LEVEL1 + LEVEL2);
    let lines_sum: i64 = statement.lines.iter().map(|l| amount(&l.amount)).sum();
    assert_eq!(lines_sum, 0);

    let ledger = world.ledger().await;
    assert!(ledger.balanced, "{ledger:?}");
    assert_eq!(ledger.sum_fen, 0);
    let balance = |name: &str| {
        ledger
            .accounts
            .iter()
            .find(|a| a.account == name)
            .map_or(0, |a| a.balance_fen)
    };
    assert_eq!(balance("brand/commission_expense"), 2 * LEVEL1 + LEVEL2);
    assert_eq!(balance("brand/bank"), -(LEVEL1 + LEVEL2));
    assert_eq!(balance("member/*/clearing"), -LEVEL1);
    let _ = chain.c;
    world.stop().await;
}

#[tokio::test]
async fn a_return_inside_the_window_reverses_and_after_settlement_claws_back() {
    let mut world = Loop::start("payreturn").await;
    world
        .payouts
        .upsert_plan(two_level_plan(BRAND, 100))
        .await
        .unwrap();
    let chain = chain(&mut world).await;
    world.commissions_of(&chain.a, |c| c.len() == 2).await;

    // C returns the phone inside the window: B's level 1 and A's level 2 on it reverse.
    void(&mut world, &chain.codes[2]).await;
    let of_b = world
        .commissions_of(&chain.b, |c| {
            c.iter()
                .all(|c| c.status == pb::CommissionStatus::Reversed as i32)
        })
        .await;
    assert_eq!(amount(&of_b[0].amount), 0);
    assert_eq!(amount(&of_b[0].accrued), LEVEL1);

    world.advance(chrono::Duration::days(31));
    world
        .account(&chain.a, |a| amount(&a.payable) == LEVEL1)
        .await;
    let first = world.settle("settle-r1").await.unwrap();
    // Only A's level 1 on B's purchase is left to pay; nothing of the returned sale.
    assert_eq!(first.lines_count, 1);
    assert_eq!(amount(&first.total), LEVEL1);

    // B returns after settlement: A's settled level 1 is clawed back as a receivable...
    void(&mut world, &chain.codes[1]).await;
    let account = world
        .account(&chain.a, |a| amount(&a.receivable) == LEVEL1)
        .await;
    assert_eq!(amount(&account.clawed_back), LEVEL1);
    let clawed = world
        .commissions_of(&chain.a, |c| {
            c.iter()
                .any(|c| c.status == pb::CommissionStatus::ClawedBack as i32)
        })
        .await;
    let statuses: Vec<i32> = {
        let mut s: Vec<i32> = clawed.iter().map(|c| c.status).collect();
        s.sort();
        s
    };
    // A's level 2 on C's returned purchase was reversed; A's level 1 on B's is clawed back.
    assert_eq!(
        statuses,
        vec![
            pb::CommissionStatus::Reversed as i32,
            pb::CommissionStatus::ClawedBack as i32
        ]
    );

    // ...carried (A owes more than A is owed) and never paid out, then netted once A earns.
    let second = world.settle("settle-r2").await.unwrap_err();
    assert_eq!(second.code(), tonic::Code::FailedPrecondition);
    assert!(
        second
            .message()
            .contains("1 beneficiaries would be carried over"),
        "{second:?}"
    );

    let codes = world.issue(BRAND, 3).await;
    let link_a = world.link_for(BRAND, &chain.a, "").await;
    for (i, code) in codes.iter().enumerate() {
        world
            .activate(activation(
                BRAND,
                code,
                &format!("1390000000{i}"),
                &format!("SN-N{i}"),
                &link_a.token,
            ))
            .await;
    }
    // Bought a month "ago" by the moved clock: they vest as soon as they accrue.
    world
        .commissions_of(&chain.a, |c| {
            c.iter()
                .filter(|c| c.status == pb::CommissionStatus::Vested as i32)
                .count()
                == 3
        })
        .await;
    world
        .account(&chain.a, |a| amount(&a.payable) == 3 * LEVEL1)
        .await;
    let third = world.settle("settle-r3").await.unwrap();
    assert_eq!(third.lines_count, 1);
    // Three new level-1 commissions less the claw-back.
    assert_eq!(amount(&third.total), 3 * LEVEL1 - LEVEL1);
    let shown = world
        .settlement(&third.batch_id, |b| b.lines.len() == 1)
        .await;
    assert_eq!(amount(&shown.lines[0].netted), LEVEL1);
    world
        .account(&chain.a, |a| amount(&a.receivable) == 0)
        .await;
    assert!(world.ledger().await.balanced);
    world.reconciled().await;
    world.stop().await;
}

#[tokio::test]
async fn a_member_under_the_minimum_is_carried_over() {
    let mut world = Loop::start("payminimum").await;
    // 400.00 yuan minimum: A (419.93) is paid, B (299.95) carried.
    world
        .payouts
        .upsert_plan(two_level_plan(BRAND, 40_000))
        .await
        .unwrap();
    let chain = chain(&mut world).await;
    world.commissions_of(&chain.a, |c| c.len() == 2).await;
    world.commissions_of(&chain.b, |c| c.len() == 1).await;
    world.advance(chrono::Duration::days(31));
    world
        .account(&chain.b, |a| amount(&a.payable) == LEVEL1)
        .await;
    world
        .account(&chain.a, |a| amount(&a.payable) == LEVEL1 + LEVEL2)
        .await;
    let batch = world.settle("settle-m1").await.unwrap();
    assert_eq!(batch.lines_count, 1);
    assert_eq!(amount(&batch.total), LEVEL1 + LEVEL2);
    assert_eq!(batch.carried.len(), 1);
    assert_eq!(batch.carried[0].beneficiary.as_ref().unwrap().id, chain.b);
    assert_eq!(amount(&batch.carried[0].net), LEVEL1);
    assert!(
        batch.carried[0]
            .reason
            .contains("minimum payout of 400.00 yuan")
    );
    // B's commission is still payable, for a later batch.
    let account_b = world
        .account(&chain.b, |a| amount(&a.payable) == LEVEL1)
        .await;
    assert_eq!(amount(&account_b.settled_unpaid), 0);
    world.stop().await;
}

async fn void(world: &mut Loop, code: &str) {
    use scanloop_proto::activation::v1 as act;
    world
        .activation
        .void_warranty(act::VoidWarrantyRequest {
            brand_id: BRAND.into(),
            request_id: request_id(),
            code: code.into(),
            reason: "returned within 7 days".into(),
        })
        .await
        .unwrap();
}

#[tokio::test]
async fn a_referral_rejected_after_attribution_is_taken_back() {
    use scanloop_proto::referral::v1 as referral;
    let mut world = Loop::start("payrevoke").await;
    world
        .payouts
        .upsert_plan(two_level_plan(BRAND, 100))
        .await
        .unwrap();
    let chain = chain(&mut world).await;
    let of_b = world.commissions_of(&chain.b, |c| c.len() == 1).await;
    // Fraud found later in C's purchase (B's link): a reviewer rejects the attribution.
    world
        .referral
        .review_referral(referral::ReviewReferralRequest {
            brand_id: BRAND.into(),
            request_id: request_id(),
            attribution_id: of_b[0].attribution_id.clone(),
            decision: referral::ReviewDecision::Reject as i32,
            reviewer: "risk@acme".into(),
            note: "same household as the referrer".into(),
        })
        .await
        .unwrap();
    // Both levels on that sale are reversed (nothing was settled yet); A's level 1 on B's
    // purchase stands.
    let of_b = world
        .commissions_of(&chain.b, |c| {
            c[0].status == pb::CommissionStatus::Reversed as i32
        })
        .await;
    assert_eq!(amount(&of_b[0].amount), 0);
    let of_a = world
        .commissions_of(&chain.a, |c| {
            c.iter()
                .any(|c| c.status == pb::CommissionStatus::Reversed as i32)
        })
        .await;
    assert_eq!(
        amounts(&of_a),
        vec![
            (L1, LEVEL1, PENDING),
            (L2, 0, pb::CommissionStatus::Reversed as i32)
        ]
    );
    let sale = world
        .payouts
        .list_commissions(pb::ListCommissionsRequest {
            brand_id: BRAND.into(),
            of: Some(pb::list_commissions_request::Of::AttributionId(
                of_b[0].attribution_id.clone(),
            )),
            page: None,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(sale.commissions.len(), 2);
    assert!(world.ledger().await.balanced);
    world.stop().await;
}
