#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Two settlement runs at once never settle a commission twice; partial refunds before and after
//! settlement reduce and claw back at the frozen rate; replaying every topic through fresh
//! consumer groups changes no account, ledger or batch.

mod common;

use common::*;
use scanloop_proto::activation::v1 as act;
use scanloop_proto::payouts::v1 as pb;

const LEVEL1: i64 = 29_995;

/// `n` friends buy through `referrer`'s link; returns their codes.
async fn friends_of(world: &mut Loop, referrer_phone: &str, n: usize) -> (String, Vec<String>) {
    let codes = world.issue(BRAND, n as u32 + 1).await;
    world
        .activate(activation(BRAND, &codes[0], referrer_phone, "SN-R", ""))
        .await;
    let referrer = world.member_of(BRAND, referrer_phone).await.member_id;
    let link = world.link_for(BRAND, &referrer, "").await;
    for (i, code) in codes[1..].iter().enumerate() {
        world
            .activate(activation(
                BRAND,
                code,
                &format!("1370000{i:04}"),
                &format!("SN-F{i}"),
                &link.token,
            ))
            .await;
    }
    (referrer, codes[1..].to_vec())
}

#[tokio::test]
async fn two_concurrent_settlements_never_settle_one_commission_twice() {
    let mut world = Loop::start("payconcurrent").await;
    world
        .payouts
        .upsert_plan(two_level_plan(BRAND, 100))
        .await
        .unwrap();
    let (referrer, _) = friends_of(&mut world, "13600000001", 4).await;
    world.commissions_of(&referrer, |c| c.len() == 4).await;
    world.advance(chrono::Duration::days(31));
    world
        .account(&referrer, |a| amount(&a.payable) == 4 * LEVEL1)
        .await;

    let (one, two) = tokio::join!(world.settle("concurrent-1"), world.settle("concurrent-2"));
    // One batch pays each commission once (4 × 299.95 yuan in one line); the other run finds
    // nothing left and is refused: no batch without lines.
    let (batch, refused) = match (one, two) {
        (Ok(batch), Err(refused)) | (Err(refused), Ok(batch)) => (batch, refused),
        other => panic!("one batch and one refusal expected: {other:?}"),
    };
    assert_eq!(
        refused.code(),
        tonic::Code::FailedPrecondition,
        "{refused:?}"
    );
    assert_eq!(amount(&batch.total), 4 * LEVEL1);
    assert_eq!(batch.commissions, 4);
    assert_eq!(batch.lines_count, 1);
    let account = world
        .account(&referrer, |a| amount(&a.settled_unpaid) == 4 * LEVEL1)
        .await;
    assert_eq!(amount(&account.payable), 0);
    let ledger = world.ledger().await;
    assert!(ledger.balanced);
    world.reconciled().await;
    world.stop().await;
}

async fn refund(
    world: &mut Loop,
    code: &str,
    fen_amount: i64,
) -> Result<act::Warranty, tonic::Status> {
    world
        .activation
        .refund_purchase(act::RefundPurchaseRequest {
            brand_id: BRAND.into(),
            request_id: request_id(),
            code: code.into(),
            amount: fen(fen_amount),
            reason: "price protection".into(),
        })
        .await
        .map(tonic::Response::into_inner)
}

#[tokio::test]
async fn a_30_percent_refund_before_and_after_settlement() {
    let mut world = Loop::start("payrefund").await;
    world
        .payouts
        .upsert_plan(two_level_plan(BRAND, 100))
        .await
        .unwrap();
    let (referrer, codes) = friends_of(&mut world, "13500000001", 2).await;
    world.commissions_of(&referrer, |c| c.len() == 2).await;

    // 30% of 5,999.00 yuan refunded before settlement: 5% of 4,199.30 = 209.96 (rounded down).
    refund(&mut world, &codes[0], 179_970).await.unwrap();
    let reduced = world
        .commissions_of(&referrer, |c| c.iter().any(|c| amount(&c.amount) == 20_996))
        .await;
    assert!(
        reduced
            .iter()
            .any(|c| amount(&c.accrued) == LEVEL1 && amount(&c.amount) == 20_996)
    );

    world.advance(chrono::Duration::days(31));
    world
        .account(&referrer, |a| amount(&a.payable) == LEVEL1 + 20_996)
        .await;
    let batch = world.settle("refund-1").await.unwrap();
    assert_eq!(amount(&batch.total), LEVEL1 + 20_996);

    // 30% of the other sale refunded after settlement: 89.99 yuan clawed back.
    refund(&mut world, &codes[1], 179_970).await.unwrap();
    let account = world
        .account(&referrer, |a| amount(&a.receivable) == LEVEL1 - 20_996)
        .await;
    assert_eq!(amount(&account.clawed_back), 8_999);
    // More than is left is refused by activation, and nothing changes here.
    let refused = refund(&mut world, &codes[1], 500_000).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::FailedPrecondition);
    let ledger = world.ledger().await;
    assert!(ledger.balanced);
    world.stop().await;
}

#[tokio::test]
async fn replaying_every_topic_through_fresh_groups_changes_nothing() {
    let mut world = Loop::start("payreplay").await;
    world
        .payouts
        .upsert_plan(two_level_plan(BRAND, 100))
        .await
        .unwrap();
    let (referrer, codes) = friends_of(&mut world, "13400000001", 3).await;
    world.commissions_of(&referrer, |c| c.len() == 3).await;
    world
        .activation
        .void_warranty(act::VoidWarrantyRequest {
            brand_id: BRAND.into(),
            request_id: request_id(),
            code: codes[2].clone(),
            reason: "returned".into(),
        })
        .await
        .unwrap();
    world.advance(chrono::Duration::days(31));
    world
        .account(&referrer, |a| amount(&a.payable) == 2 * LEVEL1)
        .await;
    let batch = world.settle("replay-1").await.unwrap();
    assert_eq!(amount(&batch.total), 2 * LEVEL1);
    world
        .settlement(&batch.batch_id, |b| {
            b.status == pb::BatchStatus::Completed as i32
        })
        .await;
    wait_consumed(&world.payouts_group("projections"), &world.payouts_topic).await;

    let before_events = envelopes_on(&world.payouts_topic).await.len();
    let before_account = world.account(&referrer, |_| true).await;
    let before_ledger = world.ledger().await;
    let before_batch = world.settlement(&batch.batch_id, |_| true).await;

    // A second instance reads every topic from the start: its reactions decide nothing new,
    // its projections rewrite the same rows.
    world
        .start_payouts("replay-reactions", "replay-projections")
        .await;
    wait_consumed(
        &world.payouts_group("replay-reactions"),
        &world.referral_topic,
    )
    .await;
    wait_consumed(
        &world.payouts_group("replay-reactions"),
        &world.activation_topic,
    )
    .await;
    wait_consumed(
        &world.payouts_group("replay-projections"),
        &world.payouts_topic,
    )
    .await;

    assert_eq!(
        envelopes_on(&world.payouts_topic).await.len(),
        before_events
    );
    assert_eq!(world.account(&referrer, |_| true).await, before_account);
    assert_eq!(world.ledger().await, before_ledger);
    assert_eq!(
        world.settlement(&batch.batch_id, |_| true).await,
        before_batch
    );
    world.stop().await;
}

#[tokio::test]
async fn two_instances_vest_each_commission_once() {
    let mut world = Loop::start("paytwice").await;
    world
        .payouts
        .upsert_plan(two_level_plan(BRAND, 100))
        .await
        .unwrap();
    // A second replica: the same consumer groups, its own vesting job on the same timers.
    world.start_payouts("reactions", "projections").await;
    let (referrer, _) = friends_of(&mut world, "13300000001", 3).await;
    world.commissions_of(&referrer, |c| c.len() == 3).await;
    world.advance(chrono::Duration::days(31));
    world
        .account(&referrer, |a| amount(&a.payable) == 3 * LEVEL1)
        .await;
    wait_consumed(&world.payouts_group("projections"), &world.payouts_topic).await;
    // Distinct events (the outbox may publish one twice; a second vesting would be a second
    // event, at another version).
    let vested: std::collections::BTreeSet<(String, u64)> = envelopes_on(&world.payouts_topic)
        .await
        .into_iter()
        .filter(|e| e.event_type == "scanloop.payouts.v1.CommissionVested")
        .map(|e| (e.stream_id, e.version))
        .collect();
    assert_eq!(vested.len(), 3);
    assert!(world.ledger().await.balanced);
    world.stop().await;
}
