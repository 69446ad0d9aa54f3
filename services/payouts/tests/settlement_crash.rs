#![allow(clippy::unwrap_used, clippy::expect_used)]
//! A settlement run stopped at each of its write boundaries (the `fail` points of
//! `app/settlement_run.rs`, compiled in with the `failpoints` feature), then the world changes
//! under it (the minimum payout is raised above every net), then the run is resumed while a
//! second run with another request id starts beside it. Each time:
//! - the batch pays exactly the lines it planned before the crash (nobody is dropped by the
//!   raised minimum, so no money stays in clearing without a line);
//! - each beneficiary's clearing (settled, unpaid) equals their line, and every settled
//!   commission is in exactly one line;
//! - the second runner changes nothing: no second batch, the same lines.
//!
//! Run alone (fail points are process-wide): `cargo test -p scanloop-payouts --features
//! failpoints --test settlement_crash -- --test-threads=1`.

mod common;

use common::*;
use scanloop_proto::activation::v1 as act;
use scanloop_proto::common::v1::PageRequest;
use scanloop_proto::payouts::v1 as pb;

const LEVEL1: i64 = 29_995;

/// `friends` activate through `referrer`'s link; returns their codes.
async fn friends_of(world: &mut Loop, referrer: &str, friends: &[&str]) -> Vec<String> {
    let codes = world.issue(BRAND, friends.len() as u32).await;
    let link = world.link_for(BRAND, referrer, "").await;
    for (code, friend) in codes.iter().zip(friends) {
        world
            .activate(activation(
                BRAND,
                code,
                friend,
                &format!("SN-{friend}"),
                &link.token,
            ))
            .await;
    }
    codes
}

/// A new member (their own activation).
async fn new_member(world: &mut Loop, phone: &str) -> String {
    let code = world.issue(BRAND, 1).await.remove(0);
    world
        .activate(activation(BRAND, &code, phone, &format!("SN-{phone}"), ""))
        .await;
    world.member_of(BRAND, phone).await.member_id
}

async fn set_minimum(world: &Loop, minimum_fen: i64) {
    world
        .payouts
        .clone()
        .upsert_plan(two_level_plan(BRAND, minimum_fen))
        .await
        .unwrap();
}

async fn batches(world: &Loop) -> Vec<pb::SettlementBatch> {
    world
        .payouts
        .clone()
        .list_settlements(pb::ListSettlementsRequest {
            brand_id: BRAND.into(),
            page: Some(PageRequest {
                page_size: 100,
                page_token: String::new(),
            }),
        })
        .await
        .unwrap()
        .into_inner()
        .batches
}

/// A owes a 299.95 claw-back (a friend returned after batch 0 settled and was paid) and has two
/// new vested commissions; B has one. The minimum payout is 200 yuan, so both are due: A nets
/// 599.90 - 299.95, B 299.95.
async fn world_with_a_claw_back(name: &str) -> (Loop, String, String) {
    let mut world = Loop::start(name).await;
    set_minimum(&world, 20_000).await;
    let a = new_member(&mut world, "13600000001").await;
    let returned = friends_of(&mut world, &a, &["13700000001"]).await;
    world.commissions_of(&a, |c| c.len() == 1).await;
    world.advance(chrono::Duration::days(31));
    world
        .account(&a, |acc| amount(&acc.payable) == LEVEL1)
        .await;
    let batch0 = world.settle("batch-0").await.unwrap();
    world
        .payouts
        .clone()
        .mark_paid(pb::MarkPaidRequest {
            brand_id: BRAND.into(),
            request_id: request_id(),
            batch_id: batch0.batch_id.clone(),
            beneficiary: member(&a),
            reference: "TX-0".into(),
        })
        .await
        .unwrap();
    world
        .activation
        .clone()
        .void_warranty(act::VoidWarrantyRequest {
            brand_id: BRAND.into(),
            request_id: request_id(),
            code: returned[0].clone(),
            reason: "returned after the window".into(),
        })
        .await
        .unwrap();
    world
        .account(&a, |acc| {
            amount(&acc.receivable) == LEVEL1 && amount(&acc.settled_unpaid) == 0
        })
        .await;
    friends_of(&mut world, &a, &["13700000002", "13700000003"]).await;
    let b = new_member(&mut world, "13600000002").await;
    friends_of(&mut world, &b, &["13700000004"]).await;
    world.commissions_of(&a, |c| c.len() == 3).await;
    world.commissions_of(&b, |c| c.len() == 1).await;
    world.advance(chrono::Duration::days(31));
    world
        .account(&a, |acc| amount(&acc.payable) == 2 * LEVEL1)
        .await;
    world
        .account(&b, |acc| amount(&acc.payable) == LEVEL1)
        .await;
    (world, a, b)
}

async fn crash_then_resume(n: usize, point: &str, action: &str) {
    let (world, a, b) = world_with_a_claw_back(&format!("paycrash{n}")).await;

    // A retry resends the same request: the same id and cutoff.
    let cutoff = Some(scanloop_proto::time::to_timestamp(world.now()));
    fail::cfg(point, action).unwrap();
    let crashed = world.settle_at("batch-1", cutoff).await;
    fail::remove(point);
    let status = crashed.expect_err("the run stops at the fail point");
    assert_eq!(
        status.code(),
        tonic::Code::Unavailable,
        "{point}: {status:?}"
    );

    // Meanwhile the minimum is raised above every net: a run that planned again would carry
    // both and leave what already settled in clearing with no line.
    set_minimum(&world, 40_000).await;
    // The crashed run's retry, twice at once, and a new run beside them.
    let (retry, again, other) = tokio::join!(
        world.settle_at("batch-1", cutoff),
        world.settle_at("batch-1", cutoff),
        world.settle("batch-2")
    );
    let (retry, again) = (retry.unwrap(), again.unwrap());
    assert_eq!(retry, again, "{point}: a repeat answers as the first");
    let other = other.expect_err("nothing is left for a second batch");
    assert_eq!(other.code(), tonic::Code::FailedPrecondition, "{point}");
    assert_eq!(retry.lines_count, 2, "{point}");
    assert_eq!(retry.commissions, 3, "{point}");
    assert_eq!(amount(&retry.total), 2 * LEVEL1, "{point}");

    let shown = world
        .settlement(&retry.batch_id, |s| s.lines.len() == 2)
        .await;
    assert_eq!(
        pb::SettlementBatch {
            lines: Vec::new(),
            page: None,
            ..shown.clone()
        },
        retry,
        "{point}: the answer is the batch as GetSettlement shows it"
    );
    let line_of = |who: &str| {
        shown
            .lines
            .iter()
            .find(|l| l.beneficiary == member(who))
            .cloned()
            .unwrap()
    };
    let (line_a, line_b) = (line_of(&a), line_of(&b));
    assert_eq!(
        (
            amount(&line_a.gross),
            amount(&line_a.netted),
            amount(&line_a.amount)
        ),
        (2 * LEVEL1, LEVEL1, LEVEL1),
        "{point}"
    );
    assert_eq!(
        (
            amount(&line_b.gross),
            amount(&line_b.netted),
            amount(&line_b.amount)
        ),
        (LEVEL1, 0, LEVEL1),
        "{point}"
    );

    // Clearing holds exactly the unpaid lines; every settled commission is in one line.
    for (who, line) in [(&a, &line_a), (&b, &line_b)] {
        world
            .account(who, |acc| {
                amount(&acc.settled_unpaid) == amount(&line.amount)
                    && amount(&acc.payable) == 0
                    && amount(&acc.receivable) == 0
            })
            .await;
        let in_batch = world
            .commissions_of(who, |c| {
                c.iter().filter(|c| c.batch_id == retry.batch_id).count()
                    == line.commissions as usize
            })
            .await;
        assert!(
            in_batch
                .iter()
                .filter(|c| c.batch_id == retry.batch_id)
                .all(|c| c.status == pb::CommissionStatus::Settled as i32),
            "{point}"
        );
    }
    let listed = batches(&world).await;
    assert_eq!(
        listed.len(),
        2,
        "{point}: batch 0 and batch 1 only: {listed:?}"
    );
    assert!(world.ledger().await.balanced);
    let report = world.reconciled().await;
    assert_eq!(report.batches, 2, "{point}");
    world.stop().await;
}

#[tokio::test]
async fn a_settlement_stopped_at_any_write_is_finished_by_its_plan() {
    // Stops: after the plan; after the first sale stream settled (the others not); after the
    // claw-back netted; after the lines, before the batch closed.
    for (n, (point, action)) in [
        ("settlement::planned", "return"),
        ("settlement::settled-sale", "1*off->return"),
        ("settlement::netted-sale", "return"),
        ("settlement::lines-recorded", "return"),
    ]
    .into_iter()
    .enumerate()
    {
        crash_then_resume(n, point, action).await;
    }
}
