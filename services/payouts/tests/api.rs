#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Bad input on every RPC: the right status, a message a caller can act on, nothing written.
//! Plans: the rules a plan must keep, by name; versions; request ids.

mod common;

use common::*;
use scanloop_proto::payouts::v1 as pb;
use tonic::Code;

fn code_of<T>(result: Result<tonic::Response<T>, tonic::Status>) -> (Code, String) {
    match result {
        Ok(_) => (Code::Ok, String::new()),
        Err(status) => (status.code(), status.message().to_owned()),
    }
}

#[tokio::test]
async fn bad_input_on_every_rpc_is_refused_and_writes_nothing() {
    let world = Loop::start("payapi").await;
    let mut p = world.payouts.clone();
    let now = Some(scanloop_proto::time::to_timestamp(chrono::Utc::now()));
    let future = Some(scanloop_proto::time::to_timestamp(
        chrono::Utc::now() + chrono::Duration::days(2),
    ));
    let no_kind = Some(pb::Beneficiary {
        kind: 0,
        id: "x".into(),
    });

    let mut plan = two_level_plan(BRAND, 100);
    plan.levels.push(bps(3, 100));
    let refusals: Vec<(&str, (Code, String), Code, &str)> = vec![
        (
            "UpsertPlan level 3",
            code_of(p.upsert_plan(plan).await),
            Code::InvalidArgument,
            "rule two-levels-only",
        ),
        (
            "UpsertPlan over 100%",
            code_of(
                p.upsert_plan(pb::UpsertPlanRequest {
                    levels: vec![bps(1, 10_001)],
                    ..two_level_plan(BRAND, 100)
                })
                .await,
            ),
            Code::InvalidArgument,
            "rule rate-at-most-100-percent",
        ),
        (
            "UpsertPlan over the ceiling",
            code_of(
                p.upsert_plan(pb::UpsertPlanRequest {
                    levels: vec![bps(1, 2_500), bps(2, 600)],
                    ..two_level_plan(BRAND, 100)
                })
                .await,
            ),
            Code::InvalidArgument,
            "rule levels-within-ceiling",
        ),
        (
            "UpsertPlan level 2 unacknowledged",
            code_of(
                p.upsert_plan(pb::UpsertPlanRequest {
                    level2_acknowledgement: None,
                    ..two_level_plan(BRAND, 100)
                })
                .await,
            ),
            Code::InvalidArgument,
            "rule level2-needs-acknowledgement",
        ),
        (
            "UpsertPlan no brand",
            code_of(
                p.upsert_plan(pb::UpsertPlanRequest {
                    brand_id: String::new(),
                    ..two_level_plan(BRAND, 100)
                })
                .await,
            ),
            Code::InvalidArgument,
            "brand_id",
        ),
        (
            "UpsertPlan no request id",
            code_of(
                p.upsert_plan(pb::UpsertPlanRequest {
                    request_id: String::new(),
                    ..two_level_plan(BRAND, 100)
                })
                .await,
            ),
            Code::InvalidArgument,
            "request_id",
        ),
        (
            "GetPlan none yet",
            code_of(
                p.get_plan(pb::GetPlanRequest {
                    brand_id: BRAND.into(),
                    sku: String::new(),
                })
                .await,
            ),
            Code::NotFound,
            "UpsertPlan first",
        ),
        (
            "GetAccount no beneficiary",
            code_of(
                p.get_account(pb::GetAccountRequest {
                    brand_id: BRAND.into(),
                    beneficiary: None,
                })
                .await,
            ),
            Code::InvalidArgument,
            "beneficiary",
        ),
        (
            "GetAccount no kind",
            code_of(
                p.get_account(pb::GetAccountRequest {
                    brand_id: BRAND.into(),
                    beneficiary: no_kind.clone(),
                })
                .await,
            ),
            Code::InvalidArgument,
            "MEMBER or STORE",
        ),
        (
            "ListCommissions neither",
            code_of(
                p.list_commissions(pb::ListCommissionsRequest {
                    brand_id: BRAND.into(),
                    of: None,
                    page: None,
                })
                .await,
            ),
            Code::InvalidArgument,
            "beneficiary or an attribution_id",
        ),
        (
            "ListCommissions attribution id not a UUID",
            code_of(
                p.list_commissions(pb::ListCommissionsRequest {
                    brand_id: BRAND.into(),
                    of: Some(pb::list_commissions_request::Of::AttributionId(
                        "xyz".into(),
                    )),
                    page: None,
                })
                .await,
            ),
            Code::InvalidArgument,
            "attribution_id must be a UUID",
        ),
        (
            "UpsertPlan minimum payout beyond any purchase",
            code_of(
                p.upsert_plan(pb::UpsertPlanRequest {
                    minimum_payout: fen(i64::MAX),
                    ..two_level_plan(BRAND, 0)
                })
                .await,
            ),
            Code::InvalidArgument,
            "rule amounts-within-purchase-ceiling",
        ),
        (
            "ListCommissions bad page token",
            code_of(
                p.list_commissions(pb::ListCommissionsRequest {
                    brand_id: BRAND.into(),
                    of: Some(pb::list_commissions_request::Of::Beneficiary(
                        member("m").unwrap(),
                    )),
                    page: Some(scanloop_proto::common::v1::PageRequest {
                        page_size: 5,
                        page_token: "bm90LWEtdG9rZW4".into(),
                    }),
                })
                .await,
            ),
            Code::InvalidArgument,
            "page_token",
        ),
        (
            "RunSettlement no cutoff",
            code_of(
                p.run_settlement(pb::RunSettlementRequest {
                    brand_id: BRAND.into(),
                    request_id: request_id(),
                    cutoff: None,
                })
                .await,
            ),
            Code::InvalidArgument,
            "cutoff is required",
        ),
        (
            "RunSettlement future cutoff",
            code_of(
                p.run_settlement(pb::RunSettlementRequest {
                    brand_id: BRAND.into(),
                    request_id: request_id(),
                    cutoff: future,
                })
                .await,
            ),
            Code::InvalidArgument,
            "in the future",
        ),
        (
            "RunSettlement no request id",
            code_of(
                p.run_settlement(pb::RunSettlementRequest {
                    brand_id: BRAND.into(),
                    request_id: String::new(),
                    cutoff: now,
                })
                .await,
            ),
            Code::InvalidArgument,
            "request_id",
        ),
        (
            "MarkPaid bad batch",
            code_of(
                p.mark_paid(pb::MarkPaidRequest {
                    brand_id: BRAND.into(),
                    request_id: request_id(),
                    batch_id: "nope".into(),
                    beneficiary: member("m"),
                    reference: "TX".into(),
                })
                .await,
            ),
            Code::InvalidArgument,
            "batch_id",
        ),
        (
            "MarkPaid no reference",
            code_of(
                p.mark_paid(pb::MarkPaidRequest {
                    brand_id: BRAND.into(),
                    request_id: request_id(),
                    batch_id: uuid::Uuid::new_v4().to_string(),
                    beneficiary: member("m"),
                    reference: String::new(),
                })
                .await,
            ),
            Code::InvalidArgument,
            "reference",
        ),
        (
            "MarkPaid unknown line",
            code_of(
                p.mark_paid(pb::MarkPaidRequest {
                    brand_id: BRAND.into(),
                    request_id: request_id(),
                    batch_id: uuid::Uuid::new_v4().to_string(),
                    beneficiary: member("m"),
                    reference: "TX".into(),
                })
                .await,
            ),
            Code::NotFound,
            "no line",
        ),
        (
            "GetSettlement unknown",
            code_of(
                p.get_settlement(pb::GetSettlementRequest {
                    brand_id: BRAND.into(),
                    batch_id: uuid::Uuid::new_v4().to_string(),
                    page: None,
                })
                .await,
            ),
            Code::NotFound,
            "no settlement batch",
        ),
        (
            "GetSettlement bad id",
            code_of(
                p.get_settlement(pb::GetSettlementRequest {
                    brand_id: BRAND.into(),
                    batch_id: "x".into(),
                    page: None,
                })
                .await,
            ),
            Code::InvalidArgument,
            "batch_id",
        ),
        (
            "ListSettlements bad token",
            code_of(
                p.list_settlements(pb::ListSettlementsRequest {
                    brand_id: BRAND.into(),
                    page: Some(scanloop_proto::common::v1::PageRequest {
                        page_size: 5,
                        page_token: "x".into(),
                    }),
                })
                .await,
            ),
            Code::InvalidArgument,
            "page_token",
        ),
        (
            "GetStatement reversed period",
            code_of(
                p.get_statement(pb::GetStatementRequest {
                    brand_id: BRAND.into(),
                    beneficiary: member("m"),
                    from: future,
                    to: now,
                })
                .await,
            ),
            Code::InvalidArgument,
            "from must be before to",
        ),
        (
            "CheckLedger no brand",
            code_of(
                p.check_ledger(pb::CheckLedgerRequest {
                    brand_id: "Bad Brand".into(),
                })
                .await,
            ),
            Code::InvalidArgument,
            "brand_id",
        ),
    ];
    for (what, (code, message), expected, says) in &refusals {
        assert_eq!(code, expected, "{what}: {message}");
        assert!(
            message.contains(says),
            "{what}: {message:?} should say {says:?}"
        );
    }

    // Nothing was written: no event on the payouts topic, no posting.
    assert!(envelopes_on(&world.payouts_topic).await.is_empty());
    assert_eq!(world.ledger().await.postings, 0);
    world.stop().await;
}

#[tokio::test]
async fn plans_are_versioned_and_request_ids_bound_to_their_command() {
    let world = Loop::start("payplans").await;
    let mut p = world.payouts.clone();
    let first = two_level_plan(BRAND, 100);
    let stored = p.upsert_plan(first.clone()).await.unwrap().into_inner();
    assert_eq!(stored.version, 1);
    assert_eq!(
        stored
            .level2_acknowledgement
            .as_ref()
            .unwrap()
            .acknowledged_by,
        "legal@acme"
    );
    // The same request again: the first answer, no second version.
    assert_eq!(
        p.upsert_plan(first.clone())
            .await
            .unwrap()
            .into_inner()
            .version,
        1
    );
    // The same request id for another plan: refused.
    let reused = pb::UpsertPlanRequest {
        levels: vec![bps(1, 800)],
        level2_acknowledgement: None,
        ..first.clone()
    };
    assert_eq!(
        p.upsert_plan(reused).await.unwrap_err().code(),
        Code::InvalidArgument
    );
    let second = p
        .upsert_plan(pb::UpsertPlanRequest {
            request_id: request_id(),
            levels: vec![bps(1, 800)],
            level2_acknowledgement: None,
            ..first.clone()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(second.version, 2);
    assert_eq!(second.level2, None);
    // A SKU's own plan beats the brand default.
    let sku_plan = p
        .upsert_plan(pb::UpsertPlanRequest {
            request_id: request_id(),
            sku: "PH-9".into(),
            levels: vec![bps(1, 300)],
            level2_acknowledgement: None,
            ..first
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(sku_plan.version, 1);
    let in_force = p
        .get_plan(pb::GetPlanRequest {
            brand_id: BRAND.into(),
            sku: "PH-9".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(in_force.sku, "PH-9");
    let default = p
        .get_plan(pb::GetPlanRequest {
            brand_id: BRAND.into(),
            sku: "OTHER".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((default.sku.as_str(), default.version), ("", 2));
    // GetPlan reads the plan's stream; its three events are published after each answer.
    let envelopes = published(&world.payouts_topic, 3).await;
    assert_eq!(envelopes.len(), 3);
    assert!(
        envelopes
            .iter()
            .all(|e| e.event_type == "scanloop.payouts.v1.PlanUpserted")
    );
    world.stop().await;
}
