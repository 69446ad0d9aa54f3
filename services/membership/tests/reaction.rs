//! The first reaction across services: activations drive membership.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failed unwrap is a failed test

mod common;

use common::{BRAND, Cluster, activation, consumed_to_end, eventually, issue, phone};
use scanloop_proto::membership::v1 as pb;

fn by_phone(number: &str) -> pb::GetMemberRequest {
    pb::GetMemberRequest {
        brand_id: BRAND.into(),
        by: Some(pb::get_member_request::By::Identity(phone(number).unwrap())),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_activation_makes_its_buyer_a_member_once_even_when_redelivered_or_replayed() {
    let mut cluster = Cluster::start("reaction").await;
    let codes = issue(&mut cluster.activation, 3).await;
    cluster
        .activation
        .activate_warranty(activation(&codes[0], "13900001111", "SN-P9-0001"))
        .await
        .unwrap();

    let mut membership = cluster.membership.clone();
    let member = eventually(
        || {
            let mut m = membership.clone();
            async move {
                m.get_member(by_phone("+86 139 0000 1111"))
                    .await
                    .map(|r| r.into_inner())
            }
        },
        |r| r.as_ref().is_ok_and(|m| m.points_balance == 100),
    )
    .await
    .unwrap();
    assert_eq!(member.device_serials, vec!["SN-P9-0001".to_owned()]);
    assert_eq!(member.tier, "member");
    assert_eq!(
        member.window_scans, 1,
        "the activation counts as the buyer's scan"
    );
    let version = member.version;

    // Republish the activation stream from scratch: Kafka now holds the event twice.
    let session = scanloop_testkit::session().await.unwrap();
    let store = scanloop_eventstore::EventStore::new(session, &cluster.activation_keyspace)
        .await
        .unwrap();
    let producer = scanloop_bus::EventProducer::new(
        &scanloop_testkit::brokers(),
        std::time::Duration::from_secs(10),
    )
    .unwrap();
    let outbox = scanloop_eventstore::Outbox::new(
        store.clone(),
        &cluster.activation_keyspace,
        producer,
        cluster.activation_topic.clone(),
    )
    .await
    .unwrap();
    let verified = cluster
        .activation
        .verify_code(scanloop_proto::activation::v1::VerifyCodeRequest {
            brand_id: BRAND.into(),
            code: codes[0].clone(),
        })
        .await
        .unwrap()
        .into_inner();
    let stream = format!("warranty-{BRAND}-{}-{}", verified.batch_id, verified.serial);
    store.set_published_version(&stream, 0).await.unwrap();
    outbox.publish_stream(&stream).await.unwrap();

    // And replay the whole activation topic through a second membership instance with a new
    // reaction group, as after a rebuild.
    cluster.start_membership("replay").await;
    // Both reaction groups (the first instance's, which got the republished duplicate, and the
    // replay's) have handled the whole activation topic before the member is compared.
    for group in ["membership-reactions", "replay"] {
        let group = cluster.reaction_group(group);
        let topic = cluster.activation_topic.clone();
        eventually(|| consumed_to_end(&group, &topic), |done| *done).await;
    }

    let after = membership
        .get_member(by_phone("13900001111"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(after.member_id, member.member_id);
    assert_eq!(
        after.version, version,
        "nothing was appended by the duplicates"
    );
    assert_eq!(after.points_balance, 100);
    assert_eq!(after.device_serials.len(), 1);

    // The ledger read model shows the one entry.
    let ledger = eventually(
        || {
            let mut m = membership.clone();
            let id = member.member_id.clone();
            async move {
                m.list_points_ledger(pb::ListPointsLedgerRequest {
                    brand_id: BRAND.into(),
                    member_id: id,
                    page: None,
                })
                .await
                .unwrap()
                .into_inner()
            }
        },
        |l| !l.entries.is_empty(),
    )
    .await;
    assert_eq!(ledger.entries.len(), 1);
    assert_eq!(
        (ledger.entries[0].points, ledger.entries[0].kind.as_str()),
        (100, "earned")
    );
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_concurrent_first_activations_by_one_buyer_make_one_member() {
    let cluster = Cluster::start("twins").await;
    let mut activation_client = cluster.activation.clone();
    let codes = issue(&mut activation_client, 2).await;
    let (mut first, mut second) = (cluster.activation.clone(), cluster.activation.clone());
    let (a, b) = tokio::join!(
        first.activate_warranty(activation(&codes[0], "13700002222", "SN-A")),
        second.activate_warranty(activation(&codes[1], "13700002222", "SN-B")),
    );
    a.unwrap();
    b.unwrap();
    let mut membership = cluster.membership.clone();
    let member = eventually(
        || {
            let mut m = membership.clone();
            async move {
                m.get_member(by_phone("13700002222"))
                    .await
                    .map(|r| r.into_inner())
            }
        },
        |r| r.as_ref().is_ok_and(|m| m.points_balance == 200),
    )
    .await
    .unwrap();
    let mut devices = member.device_serials.clone();
    devices.sort();
    assert_eq!(devices, vec!["SN-A".to_owned(), "SN-B".to_owned()]);
    let again = membership
        .get_member(by_phone("13700002222"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        again.member_id, member.member_id,
        "one identity, one member"
    );
    cluster.stop().await;
}
