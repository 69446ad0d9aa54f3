#![allow(clippy::unwrap_used, clippy::expect_used)]
//! A claw-back the beneficiary cannot pay back stays a receivable, listed by age, until finance
//! writes it off with a reason: a ledger posting back to expense, under finance's name, after
//! which no settlement nets it.

mod common;

use common::*;
use scanloop_proto::activation::v1 as act;
use scanloop_proto::payouts::v1 as pb;

const LEVEL1: i64 = 29_995;

#[tokio::test]
async fn a_receivable_is_listed_by_age_until_finance_writes_it_off() {
    let mut world = Loop::start("receivables").await;
    world
        .payouts
        .upsert_plan(two_level_plan(BRAND, 100))
        .await
        .unwrap();
    let codes = world.issue(BRAND, 2).await;
    world
        .activate(activation(BRAND, &codes[0], "13200000001", "SN-A", ""))
        .await;
    let a = world.member_of(BRAND, "13200000001").await.member_id;
    let link = world.link_for(BRAND, &a, "").await;
    world
        .activate(activation(
            BRAND,
            &codes[1],
            "13200000002",
            "SN-B",
            &link.token,
        ))
        .await;
    let accrued = world.commissions_of(&a, |c| c.len() == 1).await;
    world.advance(chrono::Duration::days(31));
    world
        .account(&a, |acc| amount(&acc.payable) == LEVEL1)
        .await;
    // A cutoff at the commission's vests_at includes it (the vesting job ran a day later).
    let batch = world
        .settle_at("settle-1", accrued[0].vests_at)
        .await
        .unwrap();
    assert_eq!((batch.commissions, amount(&batch.total)), (1, LEVEL1));
    // The friend returns after settlement: A owes the commission back, and earns nothing more.
    world
        .activation
        .clone()
        .void_warranty(act::VoidWarrantyRequest {
            brand_id: BRAND.into(),
            request_id: request_id(),
            code: codes[1].clone(),
            reason: "returned after the window".into(),
        })
        .await
        .unwrap();
    world
        .account(&a, |acc| amount(&acc.receivable) == LEVEL1)
        .await;
    world.advance(chrono::Duration::days(45));

    let list = |include_written_off: bool| {
        let client = world.payouts.clone();
        let a = a.clone();
        async move {
            client
                .clone()
                .list_receivables(pb::ListReceivablesRequest {
                    brand_id: BRAND.into(),
                    beneficiary: member(&a),
                    include_written_off,
                    page: None,
                })
                .await
                .unwrap()
                .into_inner()
        }
    };
    let open = eventually(|| list(false), |l| l.receivables.len() == 1).await;
    let owed = &open.receivables[0];
    assert_eq!(amount(&owed.amount), LEVEL1);
    assert_eq!(amount(&open.open_total), LEVEL1);
    assert_eq!(owed.status, pb::ReceivableStatus::Open as i32);
    // Clawed back at the real time of the return; payouts' clock has since moved 31 + 45 days
    // ahead of it.
    assert_eq!(owed.age_days, 76);
    assert!(
        owed.reason.contains("returned after the window"),
        "{owed:?}"
    );

    let write_off = pb::WriteOffReceivableRequest {
        brand_id: BRAND.into(),
        request_id: request_id(),
        clawback_id: owed.clawback_id.clone(),
        reason: "member left the programme; not worth collecting".into(),
    };
    let written = world
        .payouts
        .clone()
        .write_off_receivable(write_off.clone())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(written.status, pb::ReceivableStatus::WrittenOff as i32);
    assert_eq!(
        written.write_off_reason,
        "member left the programme; not worth collecting"
    );
    // The same request again: the first answer; another request: refused.
    let again = world
        .payouts
        .clone()
        .write_off_receivable(write_off.clone())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(again.written_off_at, written.written_off_at);
    let twice = world
        .payouts
        .clone()
        .write_off_receivable(pb::WriteOffReceivableRequest {
            request_id: request_id(),
            ..write_off.clone()
        })
        .await
        .unwrap_err();
    assert_eq!(twice.code(), tonic::Code::FailedPrecondition, "{twice:?}");
    let refused = world
        .payouts
        .clone()
        .write_off_receivable(pb::WriteOffReceivableRequest {
            request_id: request_id(),
            reason: String::new(),
            ..write_off
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::InvalidArgument);

    // Out of A's receivable, back to the brand's expense; listed as written off, by whom.
    world.account(&a, |acc| amount(&acc.receivable) == 0).await;
    let all = eventually(
        || list(true),
        |l| {
            l.receivables
                .first()
                .is_some_and(|r| r.status == pb::ReceivableStatus::WrittenOff as i32)
        },
    )
    .await;
    assert_eq!(all.receivables[0].written_off_by, "test-platform");
    assert_eq!(amount(&all.open_total), 0);
    assert!(list(false).await.receivables.is_empty());
    assert!(world.ledger().await.balanced);
    world.reconciled().await;
    world.stop().await;
}
