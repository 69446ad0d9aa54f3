#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Activation's events arrive again: a full replay of the activation and membership topics
//! through a new referral consumer group, and one WarrantyActivated published a second time.
//! Neither attributes a sale twice, progresses or completes the assist twice, or extends the
//! warranty a second time.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::*;
use prost::Message as _;
use scanloop_bus::{EventEnvelope, EventProducer};
use scanloop_proto::activation::v1 as act;
use scanloop_proto::referral::v1 as pb;

const WARRANTY_ACTIVATED: &str = "scanloop.activation.v1.WarrantyActivated";
const REFERRAL_ATTRIBUTED: &str = "scanloop.referral.v1.ReferralAttributed";

/// What the referral topic holds after A's campaign link brought three friends: the campaign,
/// the assist, the link, per friend a device claim, an attribution, a parent and a progress,
/// and one completion. (Each binding also claims the root of the tree it joins, A: once, or
/// again when both reactions that can attribute a parked sale bind it; see [`without_claims`].)
fn after_three_friends() -> std::collections::BTreeMap<String, usize> {
    counts(&[
        ("CampaignDefined", 1),
        ("AssistStarted", 1),
        ("LinkCreated", 1),
        ("DeviceAttributed", 3),
        ("ReferralAttributed", 3),
        ("ParentSet", 3),
        ("AssistProgressed", 3),
        ("AssistCompleted", 1),
    ])
}

/// Events by type without the root claims, after checking there is one at least per binding.
fn without_claims(envelopes: &[EventEnvelope]) -> std::collections::BTreeMap<String, usize> {
    let mut by_type = count_by_type(envelopes);
    let claims = by_type.remove("RootClaimed").unwrap_or(0);
    let bindings = by_type.get("ParentSet").copied().unwrap_or(0);
    assert!(
        claims >= bindings,
        "{claims} root claims for {bindings} bindings"
    );
    by_type
}

async fn attributed_count(cluster: &Cluster, referrer: &str) -> usize {
    cluster
        .referrals_of(BRAND, referrer, |_| true)
        .await
        .iter()
        .filter(|r| r.status == pb::ReferralStatus::Attributed as i32)
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_replayed_or_redelivered_activation_attributes_and_extends_nothing_twice() {
    let mut cluster = Cluster::start("replay").await;
    let codes = cluster.issue(BRAND, 5).await;

    // A buys; the brand's campaign (3 friends → 12 months) is bound to A's warranty.
    cluster
        .activate(activation(BRAND, &codes[0], "13500000001", "SN-A", ""))
        .await;
    let a = cluster.member_of(BRAND, "13500000001").await;
    let a_warranty = cluster.warranty(BRAND, &codes[0]).await;
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
    // Referral learns of A and of A's warranty from the topics, within moments.
    eventually(
        || {
            let mut referral = referral.clone();
            let start = start.clone();
            async move { referral.start_assist(start).await }
        },
        Result::is_ok,
    )
    .await
    .unwrap();

    // B, C and D buy through A's campaign link: the assist completes, A's warranty gains 12
    // months.
    let link = cluster.link_for(BRAND, &a.member_id, "three-friends").await;
    let mut b_warranty = None;
    for (code, buyer, serial) in [
        (&codes[1], "13500000002", "SN-B"),
        (&codes[2], "13500000003", "SN-C"),
        (&codes[3], "13500000004", "SN-D"),
    ] {
        let warranty = cluster
            .activate(activation(BRAND, code, buyer, serial, &link.token))
            .await;
        b_warranty.get_or_insert(warranty);
    }
    let b_warranty = b_warranty.unwrap();
    eventually(
        || cluster.warranty(BRAND, &codes[0]),
        |w| w.extended_months == 12,
    )
    .await;
    cluster
        .referrals_of(BRAND, &a.member_id, |r| r.len() == 3)
        .await;
    // Not every event counted here shows in a read model awaited above: wait for them all.
    let expected = after_three_friends();
    // (Each of the three bindings claimed A's node at least once.)
    let records = i64::try_from(expected.values().sum::<usize>() + 3).unwrap();
    assert_eq!(
        without_claims(&published(&cluster.referral_topic, records).await),
        expected
    );

    // Full replay: a second referral instance with a new reaction group (no checkpoints) reads
    // the activation and membership topics from the beginning.
    cluster.start_referral("replay").await;
    let replay = cluster.reaction_group("replay");
    wait_consumed(&replay, &cluster.activation_topic).await;
    wait_consumed(&replay, &cluster.membership_topic).await;
    // Whatever the replay appended went to the referral topic before its offsets were
    // committed; activation has reacted to all of it, and projected what that changed.
    wait_consumed(
        &cluster.activation_reaction_group(),
        &cluster.referral_topic,
    )
    .await;
    wait_consumed(
        &cluster.activation_projection_group(),
        &cluster.activation_topic,
    )
    .await;
    wait_consumed(&cluster.projection_group(), &cluster.referral_topic).await;

    let envelopes = envelopes_on(&cluster.referral_topic).await;
    assert_eq!(without_claims(&envelopes), after_three_friends());
    assert_eq!(cluster.warranty(BRAND, &codes[0]).await.extended_months, 12);
    assert_eq!(attributed_count(&cluster, &a.member_id).await, 3);

    // Redelivery: B's WarrantyActivated, copied from the activation topic, published again (to
    // its partition: the key is its stream). Both referral reaction groups handle it.
    let b_activated = envelopes_on(&cluster.activation_topic)
        .await
        .into_iter()
        .find(|e| {
            e.event_type == WARRANTY_ACTIVATED && {
                let activated = act::WarrantyActivated::decode(e.payload.as_slice()).unwrap();
                activated.batch_id == b_warranty.batch_id
                    && activated.serial == b_warranty.serial
                    && activated.referral_token == link.token
            }
        })
        .expect("B's activation is on the activation topic");
    let producer =
        EventProducer::new(&scanloop_testkit::brokers(), Duration::from_secs(10)).unwrap();
    producer
        .publish_in_order(
            &cluster.activation_topic,
            std::slice::from_ref(&b_activated),
        )
        .await
        .unwrap();
    for group in [cluster.reaction_group("reactions"), replay.clone()] {
        wait_consumed(&group, &cluster.activation_topic).await;
    }

    // The marker: E buys through B's own link after the redelivery was handled. E's sale is
    // attributed to B (level 2: A); once its last event (ParentSet) is on the topic, everything
    // the redelivery could have caused is there too.
    let b = cluster.member_of(BRAND, "13500000002").await;
    let b_link = cluster.link_for(BRAND, &b.member_id, "").await;
    cluster
        .activate(activation(
            BRAND,
            &codes[4],
            "13500000005",
            "SN-E",
            &b_link.token,
        ))
        .await;
    let marker = cluster
        .referrals_of(BRAND, &b.member_id, |r| r.len() == 1)
        .await;
    assert_eq!(marker[0].status, pb::ReferralStatus::Attributed as i32);
    assert_eq!(marker[0].level2_member_id, a.member_id);
    let envelopes = eventually(
        || envelopes_on(&cluster.referral_topic),
        |e| count_by_type(e).get("ParentSet") >= Some(&4),
    )
    .await;
    let mut expected = after_three_friends();
    for (event, more) in [
        ("LinkCreated", 1),
        ("DeviceAttributed", 1),
        ("ReferralAttributed", 1),
        ("ParentSet", 1),
    ] {
        *expected.get_mut(event).unwrap() += more;
    }
    assert_eq!(without_claims(&envelopes), expected);
    // Four attributions, one per sale: B's activation (delivered twice) has exactly one.
    let attributed: Vec<pb::ReferralAttributed> = envelopes
        .iter()
        .filter(|e| e.event_type == REFERRAL_ATTRIBUTED)
        .map(|e| pb::ReferralAttributed::decode(e.payload.as_slice()).unwrap())
        .collect();
    let ids: BTreeSet<&str> = attributed
        .iter()
        .map(|a| a.attribution_id.as_str())
        .collect();
    assert_eq!(ids.len(), 4);
    assert_eq!(
        attributed
            .iter()
            .filter(|a| a.activation_event_id == b_activated.event_id)
            .count(),
        1
    );

    // Activation has reacted to everything on the referral topic: still one extension.
    wait_consumed(
        &cluster.activation_reaction_group(),
        &cluster.referral_topic,
    )
    .await;
    wait_consumed(
        &cluster.activation_projection_group(),
        &cluster.activation_topic,
    )
    .await;
    assert_eq!(cluster.warranty(BRAND, &codes[0]).await.extended_months, 12);
    assert_eq!(attributed_count(&cluster, &a.member_id).await, 3);
    cluster.stop().await;
}
