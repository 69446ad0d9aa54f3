//! Membership's reaction to referral's LinkShared: each share of a member's link counts once as
//! a share engagement, however often it is delivered or replayed.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failed unwrap is a failed test

mod common;

use std::time::Duration;

use chrono::Utc;
use common::{BRAND, Cluster, consumed_to_end, eventually, phone, request_id};
use prost::Message as _;
use scanloop_bus::{EventEnvelope, EventProducer};
use scanloop_proto::membership::v1 as pb;
use scanloop_proto::membership::v1::membership_service_client::MembershipServiceClient;
use scanloop_proto::referral::v1 as referral;
use scanloop_proto::time::to_timestamp;
use scanloop_testkit::serving::AuthChannel;

/// A LinkShared of `member_id`'s link `token`, as event `version` of the link's stream, with a
/// fresh event id.
fn link_shared(member_id: &str, token: &str, version: u64) -> EventEnvelope {
    let shared_at = Utc::now() - chrono::Duration::minutes(1);
    let payload = referral::LinkShared {
        token: token.into(),
        member_id: member_id.into(),
        channel: referral::ShareChannel::WechatMoments as i32,
        shared_at: Some(to_timestamp(shared_at)),
    };
    let event_id = uuid::Uuid::now_v7().to_string();
    EventEnvelope {
        event_id: event_id.clone(),
        event_type: "scanloop.referral.v1.LinkShared".into(),
        schema_version: 1,
        brand_id: BRAND.into(),
        stream_id: format!("link-{BRAND}-{token}"),
        version,
        occurred_at: Some(to_timestamp(shared_at)),
        recorded_at: Some(to_timestamp(Utc::now())),
        correlation_id: event_id.clone(),
        causation_id: event_id,
        traceparent: String::new(),
        actor: "member-app-test".into(),
        payload: payload.encode_to_vec(),
    }
}

async fn get(membership: &MembershipServiceClient<AuthChannel>, member_id: &str) -> pb::Member {
    membership
        .clone()
        .get_member(pb::GetMemberRequest {
            brand_id: BRAND.into(),
            by: Some(pb::get_member_request::By::MemberId(member_id.into())),
        })
        .await
        .unwrap()
        .into_inner()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn each_shared_link_counts_once_as_a_share_of_its_member() {
    let mut cluster = Cluster::start("shares").await;
    let member = cluster
        .membership
        .register_member(pb::RegisterMemberRequest {
            brand_id: BRAND.into(),
            request_id: request_id(),
            identity: phone("13600006666"),
            display_name: "sharer".into(),
            region: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(member.window_shares, 0);
    let producer =
        EventProducer::new(&scanloop_testkit::brokers(), Duration::from_secs(10)).unwrap();
    let referral_topic = cluster.referral_topic.clone();
    let publish = |envelope: EventEnvelope| {
        let (producer, topic) = (producer.clone(), referral_topic.clone());
        async move {
            producer
                .publish_in_order(&topic, &[envelope])
                .await
                .unwrap();
        }
    };
    let membership = cluster.membership.clone();
    let get_member = || get(&membership, &member.member_id);

    // One link's stream, in order: two shares, then the first one delivered again.
    let token = format!("tok{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
    let first = link_shared(&member.member_id, &token, 2);
    publish(first.clone()).await;
    publish(link_shared(&member.member_id, &token, 3)).await;
    publish(first).await;
    let two = eventually(get_member, |m| m.window_shares == 2).await;

    // A share by a member membership does not know is let go (not retried, not dead-lettered)...
    let stranger = uuid::Uuid::new_v4().to_string();
    publish(link_shared(&stranger, "tokstranger", 2)).await;
    // ...and a third share, after the redelivery on the same stream, makes exactly three.
    publish(link_shared(&member.member_id, &token, 4)).await;
    let three = eventually(get_member, |m| m.window_shares >= 3).await;
    assert_eq!(three.window_shares, 3, "the redelivery counted nothing");
    assert!(three.version > two.version);
    let reactions = cluster.reaction_group("membership-reactions");
    eventually(
        || consumed_to_end(&reactions, &referral_topic),
        |done| *done,
    )
    .await;
    let dead_letters = scanloop_bus::topics::dlq_topic(&referral_topic);
    assert_eq!(
        scanloop_testkit::records_in(&dead_letters).await,
        Some(0),
        "nothing was dead-lettered"
    );

    // Replay the whole referral topic through a second instance with a new reaction group (no
    // checkpoints): every share is a repeat of its request, nothing is appended.
    cluster.start_membership("replay").await;
    let replay = cluster.reaction_group("replay");
    eventually(|| consumed_to_end(&replay, &referral_topic), |done| *done).await;
    let after = get(&cluster.membership, &member.member_id).await;
    assert_eq!(after.window_shares, 3);
    assert_eq!(after.version, three.version, "the replay appended nothing");
    cluster.stop().await;
}
