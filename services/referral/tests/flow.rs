#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The referral loop through gRPC and Kafka with activation, membership and referral running:
//! link → click → friends activate with the token → attributed with the right levels →
//! membership counts the share → the assist completes → the warranty end moves 12 months, once.

mod common;

use common::*;
use scanloop_proto::activation::v1 as act;
use scanloop_proto::common::v1::PageRequest;
use scanloop_proto::membership::v1 as mem;
use scanloop_proto::referral::v1 as pb;
use scanloop_proto::time::from_timestamp;

async fn warranty(cluster: &Cluster, code: &str) -> act::Warranty {
    cluster
        .activation
        .clone()
        .get_warranty(act::GetWarrantyRequest {
            brand_id: BRAND.into(),
            by: Some(act::get_warranty_request::By::Code(code.into())),
        })
        .await
        .unwrap()
        .into_inner()
}

#[tokio::test]
async fn friends_buying_through_a_link_are_attributed_on_two_levels_and_complete_the_assist() {
    let mut cluster = Cluster::start("flow").await;
    let codes = cluster.issue(BRAND, 6).await;

    // A buys and activates: A is a member.
    let a_warranty = cluster
        .activate(activation(BRAND, &codes[0], "13800000001", "SN-A", ""))
        .await;
    let a = cluster.member_of(BRAND, "13800000001").await;

    // The brand's campaign: 3 friends → +12 months; A binds it to their own phone's warranty.
    let mut referral = cluster.referral.clone();
    referral
        .define_campaign(pb::DefineCampaignRequest {
            brand_id: BRAND.into(),
            request_id: request_id(),
            campaign_id: "three-friends".into(),
            name: "邀请3位好友 延保1年".into(),
            goal_friends: 3,
            window_days: 30,
            extension_months: 12,
        })
        .await
        .unwrap();
    let start = pb::StartAssistRequest {
        brand_id: BRAND.into(),
        request_id: request_id(),
        member_id: a.member_id.clone(),
        campaign_id: "three-friends".into(),
        warranty: Some(pb::WarrantyRef {
            batch_id: a_warranty.batch_id.clone(),
            serial: a_warranty.serial,
        }),
    };
    let assist = eventually(
        || {
            let mut referral = referral.clone();
            let start = start.clone();
            async move { referral.start_assist(start).await }
        },
        Result::is_ok,
    )
    .await
    .unwrap()
    .into_inner();
    assert_eq!((assist.progress, assist.goal), (0, 3));

    // A's campaign link, a share on WeChat, and B's click on the landing page.
    let link = cluster.link_for(BRAND, &a.member_id, "three-friends").await;
    assert_eq!(link.token.len(), 16);
    assert_eq!(
        link.url,
        format!("https://s.example.cn/acme/r/{}", link.token)
    );
    referral
        .record_share(pb::RecordShareRequest {
            brand_id: BRAND.into(),
            request_id: request_id(),
            member_id: a.member_id.clone(),
            token: link.token.clone(),
            channel: pb::ShareChannel::WechatMoments as i32,
        })
        .await
        .unwrap();
    let landing = referral
        .resolve_link(pb::ResolveLinkRequest {
            brand_id: BRAND.into(),
            token: link.token.clone(),
            visitor: phone("13800000002"),
            visitor_key: String::new(),
            channel: pb::ShareChannel::WechatMoments as i32,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(landing.active && landing.counted);
    assert_eq!(landing.sku, "PH-9");

    // Membership counts the share toward A's KOC standing.
    let membership = cluster.membership.clone();
    let a_id = a.member_id.clone();
    eventually(
        || {
            let mut membership = membership.clone();
            let a_id = a_id.clone();
            async move {
                membership
                    .get_member(mem::GetMemberRequest {
                        brand_id: BRAND.into(),
                        by: Some(mem::get_member_request::By::MemberId(a_id)),
                    })
                    .await
                    .unwrap()
                    .into_inner()
                    .window_shares
            }
        },
        |shares| *shares == 1,
    )
    .await;

    // B, C and D buy through A's link.
    for (code, buyer, serial) in [
        (&codes[1], "13800000002", "SN-B"),
        (&codes[2], "13800000003", "SN-C"),
        (&codes[3], "13800000004", "SN-D"),
    ] {
        cluster
            .activate(activation(BRAND, code, buyer, serial, &link.token))
            .await;
    }
    let referrals = cluster
        .referrals_of(BRAND, &a.member_id, |r| {
            r.len() == 3
                && r.iter()
                    .all(|x| x.status == pb::ReferralStatus::Attributed as i32)
        })
        .await;
    assert!(referrals.iter().all(|r| r.level2_member_id.is_empty()));
    assert!(
        referrals
            .iter()
            .all(|r| r.purchase_amount.as_ref().unwrap().amount_fen == 599_900)
    );
    let d = cluster.member_of(BRAND, "13800000004").await;
    let tree = cluster
        .tree(BRAND, &a.member_id, |t| {
            t.level1_count == 3 && t.level1_member_ids.len() == 3
        })
        .await;
    assert!(tree.level1_member_ids.contains(&d.member_id));
    assert_eq!(tree.parent_member_id, "");

    // The assist completed; activation extended A's warranty by 12 months, once.
    let before = from_timestamp(a_warranty.warranty_ends_at.as_ref()).unwrap();
    let extended = eventually(
        || warranty(&cluster, &codes[0]),
        |w| w.extended_months == 12,
    )
    .await;
    let after = from_timestamp(extended.warranty_ends_at.as_ref()).unwrap();
    // Stored times have millisecond precision.
    let expected = before.checked_add_months(chrono::Months::new(12)).unwrap();
    assert_eq!(after.timestamp_millis(), expected.timestamp_millis());
    let assist = referral
        .get_assist(pb::GetAssistRequest {
            brand_id: BRAND.into(),
            member_id: a.member_id.clone(),
            campaign_id: "three-friends".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(assist.status, pb::AssistStatus::Completed as i32);
    assert_eq!(assist.progress, 3);

    // D shares their own link; E buys through it: level 1 is D, level 2 is A.
    let d_link = cluster.link_for(BRAND, &d.member_id, "").await;
    cluster
        .activate(activation(
            BRAND,
            &codes[4],
            "13800000005",
            "SN-E",
            &d_link.token,
        ))
        .await;
    let e_referrals = cluster
        .referrals_of(BRAND, &d.member_id, |r| r.len() == 1)
        .await;
    assert_eq!(e_referrals[0].level2_member_id, a.member_id);
    let e = cluster.member_of(BRAND, "13800000005").await;
    let tree = cluster
        .tree(BRAND, &a.member_id, |t| {
            t.level2_count == 1 && t.level2_member_ids.len() == 1
        })
        .await;
    assert_eq!(tree.level2_member_ids, vec![e.member_id.clone()]);
    let d_tree = cluster
        .tree(BRAND, &d.member_id, |t| {
            t.level1_count == 1 && t.level1_member_ids.len() == 1
        })
        .await;
    assert_eq!(d_tree.parent_member_id, a.member_id);

    // The funnel of A's links: one counted click, one share, three attributed sales.
    let stats = eventually(
        || {
            let mut referral = referral.clone();
            let a_id = a.member_id.clone();
            async move {
                referral
                    .get_stats(pb::GetStatsRequest {
                        brand_id: BRAND.into(),
                        member_id: a_id,
                    })
                    .await
                    .unwrap()
                    .into_inner()
                    .total
                    .unwrap()
            }
        },
        |t| t.attributed == 3 && t.shares == 1,
    )
    .await;
    assert_eq!((stats.clicks, stats.unique_visitors), (1, 1));
    assert_eq!(stats.conversion_rate, 3.0);
    let links = referral
        .list_links(pb::ListLinksRequest {
            brand_id: BRAND.into(),
            member_id: a.member_id.clone(),
            page: Some(PageRequest::default()),
        })
        .await
        .unwrap()
        .into_inner()
        .links;
    assert_eq!(links.len(), 1);
    cluster.stop().await;
}
