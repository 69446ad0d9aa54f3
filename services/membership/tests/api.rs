//! The membership API end to end: registration, identity claims, points, engagement and KOC
//! scoring, leaderboard; concurrency and bad input.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failed unwrap is a failed test

mod common;

use common::{BRAND, Cluster, eventually, phone, request_id, unionid};
use scanloop_proto::common::v1::PageRequest;
use scanloop_proto::membership::v1 as pb;
use scanloop_proto::membership::v1::membership_service_client::MembershipServiceClient;
use scanloop_testkit::serving::AuthChannel;
use tonic::Code;

async fn register(
    client: &mut MembershipServiceClient<AuthChannel>,
    number: &str,
    region: &str,
) -> pb::Member {
    client
        .register_member(pb::RegisterMemberRequest {
            brand_id: BRAND.into(),
            request_id: request_id(),
            identity: phone(number),
            display_name: format!("member {number}"),
            region: region.into(),
        })
        .await
        .unwrap()
        .into_inner()
}

fn award(member_id: &str, points: i64) -> pb::AwardPointsRequest {
    pb::AwardPointsRequest {
        brand_id: BRAND.into(),
        request_id: request_id(),
        member_id: member_id.into(),
        points,
        reason: "review bonus".into(),
    }
}

fn redeem(member_id: &str, points: i64) -> pb::RedeemPointsRequest {
    pb::RedeemPointsRequest {
        brand_id: BRAND.into(),
        request_id: request_id(),
        member_id: member_id.into(),
        points,
        reason: "coupon".into(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_claims_of_one_identity_leave_it_with_exactly_one_member() {
    let cluster = Cluster::start("claims").await;
    let mut client = cluster.membership.clone();
    let a = register(&mut client, "13500000001", "").await;
    let b = register(&mut client, "13500000002", "").await;

    let attempts = (0..10).map(|i| {
        let mut client = client.clone();
        let member_id = if i % 2 == 0 {
            a.member_id.clone()
        } else {
            b.member_id.clone()
        };
        tokio::spawn(async move {
            let outcome = client
                .link_identity(pb::LinkIdentityRequest {
                    brand_id: BRAND.into(),
                    request_id: request_id(),
                    member_id: member_id.clone(),
                    identity: unionid("oWx-shared"),
                })
                .await;
            (member_id, outcome)
        })
    });
    let mut winners = std::collections::HashSet::new();
    for attempt in futures::future::join_all(attempts).await {
        let (member_id, outcome) = attempt.unwrap();
        match outcome {
            Ok(_) => {
                winners.insert(member_id);
            }
            Err(status) => {
                assert_eq!(status.code(), Code::AlreadyExists, "{status:?}");
                assert!(status.message().contains("already belongs to member"));
            }
        }
    }
    assert_eq!(winners.len(), 1, "one member owns the identity");
    let owner = client
        .get_member(pb::GetMemberRequest {
            brand_id: BRAND.into(),
            by: Some(pb::get_member_request::By::Identity(
                unionid("oWx-shared").unwrap(),
            )),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(winners.contains(&owner.member_id));
    assert_eq!(owner.identities.len(), 2);

    // Concurrent registrations of one new identity: one member.
    let registrations = (0..6).map(|_| {
        let mut client = client.clone();
        tokio::spawn(async move {
            client
                .register_member(pb::RegisterMemberRequest {
                    brand_id: BRAND.into(),
                    request_id: request_id(),
                    identity: phone("13500000003"),
                    display_name: String::new(),
                    region: String::new(),
                })
                .await
        })
    });
    let outcomes: Vec<_> = futures::future::join_all(registrations)
        .await
        .into_iter()
        .map(|o| o.unwrap())
        .collect();
    assert_eq!(outcomes.iter().filter(|o| o.is_ok()).count(), 1);
    assert!(
        outcomes
            .iter()
            .filter_map(|o| o.as_ref().err())
            .all(|s| s.code() == Code::AlreadyExists)
    );
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_redemptions_never_overdraw_and_the_ledger_balances() {
    let cluster = Cluster::start("redeem").await;
    let mut client = cluster.membership.clone();
    let member = register(&mut client, "13600000001", "").await;
    let award_request = award(&member.member_id, 100);
    client.award_points(award_request.clone()).await.unwrap();
    // A retried award is answered, not repeated.
    let retried = client
        .award_points(award_request)
        .await
        .unwrap()
        .into_inner();
    assert_eq!(retried.balance, 100);

    let redemptions = (0..10).map(|_| {
        let mut client = client.clone();
        let request = redeem(&member.member_id, 30);
        tokio::spawn(async move { client.redeem_points(request).await })
    });
    let outcomes: Vec<_> = futures::future::join_all(redemptions)
        .await
        .into_iter()
        .map(|o| o.unwrap())
        .collect();
    assert_eq!(
        outcomes.iter().filter(|o| o.is_ok()).count(),
        3,
        "100 points cover three redemptions of 30"
    );
    for refused in outcomes.iter().filter_map(|o| o.as_ref().err()) {
        assert_eq!(refused.code(), Code::FailedPrecondition);
        assert!(
            refused.message().contains("balance is 10"),
            "{}",
            refused.message()
        );
    }
    let now = client
        .get_member(pb::GetMemberRequest {
            brand_id: BRAND.into(),
            by: Some(pb::get_member_request::By::MemberId(
                member.member_id.clone(),
            )),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(now.points_balance, 10);

    // The whole ledger, walked page by page (pages of 2), once the projection has all four
    // entries: the write side already showed that exactly one award and three redemptions exist.
    let walk = || {
        let mut client = client.clone();
        let id = member.member_id.clone();
        async move {
            let mut entries = Vec::new();
            let mut token = String::new();
            loop {
                let page = client
                    .list_points_ledger(pb::ListPointsLedgerRequest {
                        brand_id: BRAND.into(),
                        member_id: id.clone(),
                        page: Some(PageRequest {
                            page_size: 2,
                            page_token: token,
                        }),
                    })
                    .await
                    .unwrap()
                    .into_inner();
                assert!(page.entries.len() <= 2, "pages hold at most page_size");
                entries.extend(page.entries);
                token = page.page.unwrap().next_page_token;
                if token.is_empty() {
                    return entries;
                }
            }
        }
    };
    let entries = eventually(walk, |entries| entries.len() >= 4).await;
    assert_eq!(entries.len(), 4, "one award, three redemptions");
    assert_eq!(entries.iter().map(|e| e.points).sum::<i64>(), 10);
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn engagement_makes_a_koc_who_shows_on_the_leaderboard_with_the_tier_perks() {
    let cluster = Cluster::start("koc").await;
    let mut client = cluster.membership.clone();
    let koc = register(&mut client, "13800000001", "440300").await;
    let quiet = register(&mut client, "13800000002", "110000").await;
    let plan = [
        (pb::EngagementKind::Scan, 3),
        (pb::EngagementKind::Share, 2),
        (pb::EngagementKind::Comment, 5),
    ];
    let mut last = None;
    for (kind, count) in plan {
        for _ in 0..count {
            last = Some(
                client
                    .record_engagement(pb::RecordEngagementRequest {
                        brand_id: BRAND.into(),
                        request_id: request_id(),
                        member_id: koc.member_id.clone(),
                        kind: kind as i32,
                        occurred_at: None,
                    })
                    .await
                    .unwrap()
                    .into_inner(),
            );
        }
    }
    let last = last.unwrap();
    assert!(last.koc_qualified);
    assert_eq!(last.tier, "junior_sharer");
    assert_eq!(last.koc_score, 3 + 10 + 10);
    let member = client
        .get_member(pb::GetMemberRequest {
            brand_id: BRAND.into(),
            by: Some(pb::get_member_request::By::MemberId(koc.member_id.clone())),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(member.perks.iter().any(|p| p.contains("新品优先试用")));

    let board = eventually(
        || {
            let mut client = client.clone();
            async move {
                client
                    .list_leaderboard(pb::ListLeaderboardRequest {
                        brand_id: BRAND.into(),
                        region: String::new(),
                        page: None,
                    })
                    .await
                    .unwrap()
                    .into_inner()
            }
        },
        |b| {
            b.entries
                .first()
                .is_some_and(|e| e.koc_score == 23 && e.tier == "junior_sharer")
        },
    )
    .await;
    assert_eq!(board.entries[0].member_id, koc.member_id);
    assert_eq!(board.entries.len(), 2);
    assert_eq!(board.entries[1].member_id, quiet.member_id);
    let regional = client
        .list_leaderboard(pb::ListLeaderboardRequest {
            brand_id: BRAND.into(),
            region: "440300".into(),
            page: None,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(regional.entries.len(), 1);
    assert_eq!(regional.entries[0].member_id, koc.member_id);

    let tiers = client
        .list_tiers(pb::ListTiersRequest {
            brand_id: BRAND.into(),
        })
        .await
        .unwrap()
        .into_inner();
    let ids: Vec<_> = tiers.tiers.iter().map(|t| t.id.as_str()).collect();
    assert_eq!(ids, ["member", "junior_sharer", "gold_recommender"]);
    assert!(
        tiers
            .tiers
            .iter()
            .all(|t| !t.perks.is_empty() && !t.requirement.is_empty())
    );
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_input_gets_the_right_status_and_writes_nothing() {
    let cluster = Cluster::start("bad").await;
    let mut client = cluster.membership.clone();
    let member = register(&mut client, "13300000001", "").await;
    let id = member.member_id.clone();
    let unknown = uuid::Uuid::new_v4().to_string();

    let status =
        |r: Result<tonic::Response<pb::PointsBalance>, tonic::Status>| r.unwrap_err().code();
    assert_eq!(
        status(
            client
                .award_points(pb::AwardPointsRequest {
                    brand_id: String::new(),
                    ..award(&id, 5)
                })
                .await
        ),
        Code::InvalidArgument
    );
    assert_eq!(
        status(
            client
                .award_points(pb::AwardPointsRequest {
                    request_id: String::new(),
                    ..award(&id, 5)
                })
                .await
        ),
        Code::InvalidArgument
    );
    assert_eq!(
        status(client.award_points(award("not-a-uuid", 5)).await),
        Code::InvalidArgument
    );
    assert_eq!(
        status(client.award_points(award(&unknown, 5)).await),
        Code::NotFound
    );
    assert_eq!(
        status(client.award_points(award(&id, 0)).await),
        Code::InvalidArgument
    );
    assert_eq!(
        status(client.award_points(award(&id, -1)).await),
        Code::InvalidArgument
    );
    assert_eq!(
        status(client.award_points(award(&id, 1_000_001)).await),
        Code::InvalidArgument
    );
    assert_eq!(
        status(
            client
                .award_points(pb::AwardPointsRequest {
                    reason: String::new(),
                    ..award(&id, 5)
                })
                .await
        ),
        Code::InvalidArgument
    );
    assert_eq!(
        status(client.redeem_points(redeem(&id, 1)).await),
        Code::FailedPrecondition
    );
    // Another brand does not see this member.
    assert_eq!(
        status(
            client
                .award_points(pb::AwardPointsRequest {
                    brand_id: "globex".into(),
                    ..award(&id, 5)
                })
                .await
        ),
        Code::NotFound
    );

    let register_status = |identity, region: &str| pb::RegisterMemberRequest {
        brand_id: BRAND.into(),
        request_id: request_id(),
        identity,
        display_name: String::new(),
        region: region.into(),
    };
    for (request, expected) in [
        (register_status(phone("12345"), ""), Code::InvalidArgument),
        (register_status(None, ""), Code::InvalidArgument),
        (
            register_status(phone("13300000009"), "44"),
            Code::InvalidArgument,
        ),
        (
            register_status(phone("13300000001"), ""),
            Code::AlreadyExists,
        ),
    ] {
        let refused = client.register_member(request).await.unwrap_err();
        assert_eq!(refused.code(), expected, "{}", refused.message());
        assert!(
            !refused.message().contains("1330000"),
            "no phone numbers in messages"
        );
    }

    let engagement = |kind: i32, occurred_at| pb::RecordEngagementRequest {
        brand_id: BRAND.into(),
        request_id: request_id(),
        member_id: id.clone(),
        kind,
        occurred_at,
    };
    for request in [
        engagement(0, None),
        engagement(99, None),
        engagement(
            1,
            Some(scanloop_proto::time::to_timestamp(
                chrono::Utc::now() + chrono::Duration::days(1),
            )),
        ),
        engagement(
            1,
            Some(scanloop_proto::time::to_timestamp(
                chrono::Utc::now() - chrono::Duration::days(45),
            )),
        ),
    ] {
        assert_eq!(
            client.record_engagement(request).await.unwrap_err().code(),
            Code::InvalidArgument
        );
    }
    let missing = client
        .get_member(pb::GetMemberRequest {
            brand_id: BRAND.into(),
            by: Some(pb::get_member_request::By::Identity(
                phone("13300000008").unwrap(),
            )),
        })
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Code::NotFound);
    let bad_token = client
        .list_points_ledger(pb::ListPointsLedgerRequest {
            brand_id: BRAND.into(),
            member_id: id.clone(),
            page: Some(PageRequest {
                page_size: 5,
                page_token: "%%%".into(),
            }),
        })
        .await
        .unwrap_err();
    assert_eq!(bad_token.code(), Code::InvalidArgument);

    // Nothing above reached the member's stream: it holds just its registration.
    let now = client
        .get_member(pb::GetMemberRequest {
            brand_id: BRAND.into(),
            by: Some(pb::get_member_request::By::MemberId(id)),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(now.version, 1);
    assert_eq!(now.points_balance, 0);
    cluster.stop().await;
}
