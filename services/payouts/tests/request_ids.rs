#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Request ids are strict brand-wide: two concurrent first uses of one id for different commands
//! on different streams never both succeed, and a command that decided nothing (a settlement run
//! that found nothing to pay) binds its id all the same.

mod common;

use common::*;
use scanloop_proto::payouts::v1 as pb;

fn plan_for(sku: &str, request_id: &str) -> pb::UpsertPlanRequest {
    pb::UpsertPlanRequest {
        request_id: request_id.into(),
        sku: sku.into(),
        ..two_level_plan(BRAND, 100)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_request_id_serves_one_command_whatever_the_streams_and_the_timing() {
    let world = Loop::start("payrequests").await;
    // Ten times over: one id, two plans for two SKUs (two streams), sent at the same instant.
    for round in 0..10 {
        let id = request_id();
        let (mut one, mut two) = (world.payouts.clone(), world.payouts.clone());
        let (first, second) = tokio::join!(
            one.upsert_plan(plan_for(&format!("SKU-A{round}"), &id)),
            two.upsert_plan(plan_for(&format!("SKU-B{round}"), &id))
        );
        let refused = match (first, second) {
            (Ok(_), Err(refused)) | (Err(refused), Ok(_)) => refused,
            other => panic!("round {round}: one plan and one refusal expected: {other:?}"),
        };
        assert_eq!(refused.code(), tonic::Code::InvalidArgument, "{refused:?}");
        assert!(
            refused
                .message()
                .contains("already used for a different request"),
            "{refused:?}"
        );
    }

    // A settlement run that finds nothing to pay still binds its id: the same id with another
    // cutoff is refused, not run.
    let cutoff = Some(scanloop_proto::time::to_timestamp(world.now()));
    let nothing = world.settle_at("run-nothing", cutoff).await.unwrap_err();
    assert_eq!(
        nothing.code(),
        tonic::Code::FailedPrecondition,
        "{nothing:?}"
    );
    let earlier = Some(scanloop_proto::time::to_timestamp(
        world.now() - chrono::Duration::hours(1),
    ));
    let reused = world.settle_at("run-nothing", earlier).await.unwrap_err();
    assert_eq!(reused.code(), tonic::Code::InvalidArgument, "{reused:?}");
    // The same request again is still the same request.
    let again = world.settle_at("run-nothing", cutoff).await.unwrap_err();
    assert_eq!(again.code(), tonic::Code::FailedPrecondition, "{again:?}");
    world.stop().await;
}
