//! A request id is an idempotency key for one command, for every mutating RPC of the membership
//! service: the same id with the same command gets the first answer and no second effect; the
//! same id with a different payload or another kind of command is refused with INVALID_ARGUMENT
//! and writes nothing (read off the member's stream version, which every answer carries, and off
//! the balance).

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failed unwrap is a failed test

mod common;

use scanloop_testkit::assert_request_id_reused as assert_reused;

use common::{BRAND, Cluster, phone, request_id, unionid};
use scanloop_proto::membership::v1 as pb;

fn points(
    id: &str,
    member_id: &str,
    points: i64,
) -> (pb::AwardPointsRequest, pb::RedeemPointsRequest) {
    (
        pb::AwardPointsRequest {
            brand_id: BRAND.into(),
            request_id: id.into(),
            member_id: member_id.into(),
            points,
            reason: "review bonus".into(),
        },
        pb::RedeemPointsRequest {
            brand_id: BRAND.into(),
            request_id: id.into(),
            member_id: member_id.into(),
            points,
            reason: "review bonus".into(),
        },
    )
}

fn engagement(id: &str, member_id: &str, kind: pb::EngagementKind) -> pb::RecordEngagementRequest {
    pb::RecordEngagementRequest {
        brand_id: BRAND.into(),
        request_id: id.into(),
        member_id: member_id.into(),
        kind: kind as i32,
        occurred_at: None,
    }
}

async fn member(cluster: &mut Cluster, member_id: &str) -> pb::Member {
    cluster
        .membership
        .get_member(pb::GetMemberRequest {
            brand_id: BRAND.into(),
            by: Some(pb::get_member_request::By::MemberId(member_id.into())),
        })
        .await
        .unwrap()
        .into_inner()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_mutating_rpc_answers_a_repeat_once_and_refuses_a_reused_id() {
    let mut cluster = Cluster::start("request_ids").await;

    // RegisterMember: a repeat is the first answer; another display name under the same id is
    // refused; so is the same id for another person's registration (another stream).
    let register_id = request_id();
    let register = |id: &str, number: &str, name: &str| pb::RegisterMemberRequest {
        brand_id: BRAND.into(),
        request_id: id.into(),
        identity: phone(number),
        display_name: name.into(),
        region: "440300".into(),
    };
    let registered = cluster
        .membership
        .register_member(register(&register_id, "13800138001", "Li"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(registered.version, 1);
    let repeated = cluster
        .membership
        .register_member(register(&register_id, "13800138001", "Li"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(repeated, registered);
    assert_reused(
        cluster
            .membership
            .register_member(register(&register_id, "13800138001", "Wang"))
            .await,
    );
    assert_reused(
        cluster
            .membership
            .register_member(register(&register_id, "13800138002", "Li"))
            .await,
    );
    let id = registered.member_id.clone();

    // AwardPoints, then RedeemPoints under the award's id: refused, and the points stay.
    let award_id = request_id();
    let (award, redeem_same_id) = points(&award_id, &id, 100);
    let awarded = cluster
        .membership
        .award_points(award.clone())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(awarded.balance, 100);
    assert_eq!(
        cluster
            .membership
            .award_points(award.clone())
            .await
            .unwrap()
            .into_inner()
            .balance,
        100,
        "a repeated award is answered, not added"
    );
    assert_reused(cluster.membership.redeem_points(redeem_same_id).await);
    let (mut other_amount, _) = points(&award_id, &id, 5);
    other_amount.reason = "another reason".into();
    assert_reused(cluster.membership.award_points(other_amount).await);

    // RedeemPoints: a repeat takes the points once.
    let redeem_id = request_id();
    let (_, redeem) = points(&redeem_id, &id, 30);
    let redeemed = cluster
        .membership
        .redeem_points(redeem.clone())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(redeemed.balance, 70);
    assert_eq!(
        cluster
            .membership
            .redeem_points(redeem)
            .await
            .unwrap()
            .into_inner()
            .balance,
        70
    );
    let (_, redeem_more) = points(&redeem_id, &id, 40);
    assert_reused(cluster.membership.redeem_points(redeem_more).await);

    // RecordEngagement: a repeat counts once; another kind under the same id is refused.
    let engage_id = request_id();
    let first = cluster
        .membership
        .record_engagement(engagement(&engage_id, &id, pb::EngagementKind::Share))
        .await
        .unwrap()
        .into_inner();
    let again = cluster
        .membership
        .record_engagement(engagement(&engage_id, &id, pb::EngagementKind::Share))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(again, first);
    assert_reused(
        cluster
            .membership
            .record_engagement(engagement(&engage_id, &id, pb::EngagementKind::Comment))
            .await,
    );

    // LinkIdentity under an id already used for an award: refused before the identity is
    // claimed, so the unionid stays free and links under a fresh id.
    let link = |id: &str, member_id: &str| pb::LinkIdentityRequest {
        brand_id: BRAND.into(),
        request_id: id.into(),
        member_id: member_id.into(),
        identity: unionid("oU-link-1"),
    };
    assert_reused(cluster.membership.link_identity(link(&award_id, &id)).await);
    let link_id = request_id();
    let linked = cluster
        .membership
        .link_identity(link(&link_id, &id))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(linked.identities.len(), 2);
    let repeated = cluster
        .membership
        .link_identity(link(&link_id, &id))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(repeated, linked);

    // Versions: register 1, award 2, redeem 3, engagement 4 (a share alone changes no standing),
    // link 5. Nothing refused or repeated was written.
    let now = member(&mut cluster, &id).await;
    assert_eq!((now.version, now.points_balance), (5, 70));
    cluster.stop().await;
}
