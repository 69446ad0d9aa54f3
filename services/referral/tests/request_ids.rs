#![allow(clippy::unwrap_used, clippy::expect_used)]
//! A request id is one command: repeated, the first answer; reused for anything else, refused
//! with nothing written. CreateLink, RecordShare and RevokeLink are covered in api.rs; these are
//! the campaign, assist and review commands.

mod common;

use common::*;
use scanloop_config::ByBrand;
use scanloop_proto::referral::v1 as pb;
use scanloop_referral::domain::rules::Rules;
use scanloop_testkit::assert_request_id_reused;

fn campaign(request_id: &str, goal: u32) -> pb::DefineCampaignRequest {
    pb::DefineCampaignRequest {
        brand_id: BRAND.into(),
        request_id: request_id.into(),
        campaign_id: "three-friends".into(),
        name: "3 friends".into(),
        goal_friends: goal,
        window_days: 30,
        extension_months: 12,
    }
}

#[tokio::test]
async fn campaign_assist_and_review_requests_are_one_command_each() {
    // Every attribution through a link is held: a hold to review.
    let rules = Rules {
        max_per_hour: ByBrand::default().with(BRAND, 0),
        ..Rules::default()
    };
    let mut cluster = Cluster::start_with("reqids", rules).await;
    let mut referral = cluster.referral.clone();
    let codes = cluster.issue(BRAND, 3).await;
    let a_warranty = cluster
        .activate(activation(BRAND, &codes[0], "13900000001", "", ""))
        .await;
    let a = cluster.member_of(BRAND, "13900000001").await;

    // DefineCampaign: a repeat answers the first terms; another goal under the id is refused.
    let first = referral
        .define_campaign(campaign("c-1", 3))
        .await
        .unwrap()
        .into_inner();
    let again = referral
        .define_campaign(campaign("c-1", 3))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(again, first);
    assert_request_id_reused(referral.define_campaign(campaign("c-1", 5)).await);

    // StartAssist: a repeat answers the same assist; the id with another campaign is refused.
    let start = pb::StartAssistRequest {
        brand_id: BRAND.into(),
        request_id: "s-1".into(),
        member_id: a.member_id.clone(),
        campaign_id: "three-friends".into(),
        warranty: Some(pb::WarrantyRef {
            batch_id: a_warranty.batch_id.clone(),
            serial: a_warranty.serial,
        }),
    };
    let started = eventually(
        || {
            let mut referral = referral.clone();
            let start = start.clone();
            async move { referral.start_assist(start).await.map(|r| r.into_inner()) }
        },
        Result::is_ok,
    )
    .await
    .unwrap();
    // The refused goal of 5 was never written: the assist runs on the first terms.
    assert_eq!((started.goal, started.extension_months), (3, 12));
    let repeated = referral
        .start_assist(start.clone())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(repeated.assist_id, started.assist_id);
    assert_eq!(repeated.started_at, started.started_at);
    let mut second = campaign("c-2", 2);
    second.campaign_id = "two-friends".into();
    referral.define_campaign(second).await.unwrap();
    assert_request_id_reused(
        referral
            .start_assist(pb::StartAssistRequest {
                campaign_id: "two-friends".into(),
                ..start.clone()
            })
            .await,
    );

    // ReviewReferral: B's purchase through A's link is held; approving twice with one id
    // answers the approval twice; the id with a rejection is refused.
    let link = cluster.link_for(BRAND, &a.member_id, "").await;
    cluster
        .activate(activation(BRAND, &codes[1], "13900000002", "", &link.token))
        .await;
    let held = cluster
        .referrals_of(BRAND, &a.member_id, |r| {
            r.len() == 1 && r[0].status == pb::ReferralStatus::Held as i32
        })
        .await;
    assert_eq!(held[0].hold_reasons, vec![pb::HoldReason::Velocity as i32]);
    let review = pb::ReviewReferralRequest {
        brand_id: BRAND.into(),
        request_id: "r-1".into(),
        attribution_id: held[0].attribution_id.clone(),
        decision: pb::ReviewDecision::Approve as i32,
        reviewer: "li.na".into(),
        note: "known customer".into(),
    };
    let approved = referral
        .review_referral(review.clone())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(approved.status, pb::ReferralStatus::Attributed as i32);
    assert!(approved.hold_reasons.is_empty() && approved.detail.is_empty());
    // Repeated once the read models show the approval: the first answer again, field for field.
    cluster
        .referrals_of(BRAND, &a.member_id, |r| {
            r.len() == 1 && r[0].status == pb::ReferralStatus::Attributed as i32
        })
        .await;
    let repeated = referral
        .review_referral(review.clone())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(repeated, approved);
    assert_request_id_reused(
        referral
            .review_referral(pb::ReviewReferralRequest {
                decision: pb::ReviewDecision::Reject as i32,
                ..review.clone()
            })
            .await,
    );
    // A new id asking to approve it again: it is no longer held (it counts already; only a
    // rejection, a revocation, would still apply).
    let status = referral
        .review_referral(pb::ReviewReferralRequest {
            request_id: "r-2".into(),
            ..review
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::FailedPrecondition, "{status:?}");
    let listed = cluster
        .referrals_of(BRAND, &a.member_id, |r| {
            r.len() == 1 && r[0].status == pb::ReferralStatus::Attributed as i32
        })
        .await;
    assert_eq!(listed[0].attribution_id, held[0].attribution_id);
    cluster.stop().await;
}
