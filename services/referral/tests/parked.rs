#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Activations parked until membership names their buyer stand alone: one that can never be
//! attributed (here a parked row whose envelope is garbage) is dead-lettered on its own, on the
//! activation topic's dead letters with the reason, while the other activation parked under the
//! same identity is attributed and membership's announcement is not dead-lettered.

mod common;

use std::time::Duration;

use common::*;
use prost::Message as _;
use rdkafka::ClientConfig;
use rdkafka::Message as _;
use rdkafka::consumer::{Consumer as _, StreamConsumer};
use scanloop_bus::DeadLetter;
use scanloop_config::Secret;
use scanloop_proto::referral::v1 as pb;

/// The first dead letter on `topic` that `wanted` accepts.
async fn dead_letter(topic: &str, wanted: impl Fn(&DeadLetter) -> bool) -> DeadLetter {
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", scanloop_testkit::brokers())
        .set("group.id", scanloop_testkit::unique_name("dlq-reader"))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    consumer.subscribe(&[topic]).unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let message = tokio::time::timeout_at(deadline, consumer.recv())
            .await
            .expect("no such dead letter arrived")
            .unwrap();
        let letter = DeadLetter::decode(message.payload().unwrap_or_default()).unwrap();
        if wanted(&letter) {
            return letter;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_parked_activation_that_fails_is_dead_lettered_alone() {
    let mut cluster = Cluster::start("parked").await;
    let codes = cluster.issue(BRAND, 2).await;
    cluster
        .activate(activation(BRAND, &codes[0], "13500000001", "SN-R", ""))
        .await;
    let referrer = cluster.member_of(BRAND, "13500000001").await.member_id;
    let link = cluster.link_for(BRAND, &referrer, "").await;

    // A broken activation parked under the friend's identity before the friend buys.
    let hasher = scanloop_pii::IdentityHasher::new(Secret::new("test-identity-secret".into()));
    let key = format!(
        "phone_hash:{}",
        hasher.phone_hash(BRAND, "13500000002").unwrap()
    );
    let session = scanloop_testkit::session().await.unwrap();
    let referral_keyspace = cluster.keyspaces[2].clone();
    session
        .query_unpaged(
            format!(
                "INSERT INTO {referral_keyspace}.parked_sales \
                 (brand_id, identity_key, event_id, envelope) VALUES (?, ?, ?, ?)"
            ),
            (
                BRAND,
                key.as_str(),
                "broken-activation",
                vec![0xde_u8, 0xad],
            ),
        )
        .await
        .unwrap();

    // The friend buys through the link: membership names them, and referral takes up what was
    // parked under their identity.
    cluster
        .activate(activation(
            BRAND,
            &codes[1],
            "13500000002",
            "SN-F",
            &link.token,
        ))
        .await;
    let referrals = cluster
        .referrals_of(BRAND, &referrer, |r| {
            r.len() == 1 && r[0].status == pb::ReferralStatus::Attributed as i32
        })
        .await;
    assert_eq!(referrals.len(), 1);

    let letter = dead_letter(&format!("{}.dlq", cluster.activation_topic), |l| {
        l.source_offset == -1
    })
    .await;
    assert_eq!(letter.source_topic, cluster.activation_topic);
    assert_eq!(letter.consumer, cluster.reaction_group("reactions"));
    assert!(
        letter.error.starts_with("parked activation:"),
        "{}",
        letter.error
    );

    // Membership's announcements were all handled, none dead-lettered.
    wait_consumed(
        &cluster.reaction_group("reactions"),
        &cluster.membership_topic,
    )
    .await;
    let membership_dlq = format!("{}.dlq", cluster.membership_topic);
    assert_eq!(
        scanloop_testkit::records_in(&membership_dlq)
            .await
            .unwrap_or(0),
        0
    );
    // Nothing is left parked under the identity.
    let left = session
        .query_unpaged(
            format!(
                "SELECT event_id FROM {referral_keyspace}.parked_sales \
                 WHERE brand_id = ? AND identity_key = ?"
            ),
            (BRAND, key.as_str()),
        )
        .await
        .unwrap()
        .into_rows_result()
        .unwrap()
        .rows_num();
    assert_eq!(left, 0);
    cluster.stop().await;
}
