//! Streams that grow for as long as the product is used: a link its member shares for years.
//! Loading one reads its latest snapshot and the events after it, never the whole stream.

use std::time::Duration;

use chrono::Utc;
use scanloop_bus::EventProducer;
use scanloop_eventstore::{
    Aggregate, AppendMeta, DomainEvent, EventStore, NewEvent, Outbox, Repository,
};
use scanloop_proto::referral::v1 as pb;
use scanloop_proto::time::to_timestamp;
use scanloop_referral::domain::ReferralEvent;
use scanloop_referral::domain::link::{self, Link};

const EVENTS: u64 = 100_000;
/// The most events one append takes.
const PER_APPEND: u64 = 100;

fn recorded(event: ReferralEvent) -> NewEvent {
    NewEvent {
        event_type: event.event_type().to_owned(),
        schema_version: event.schema_version(),
        payload: event.encode(),
        occurred_at: Utc::now(),
    }
}

fn shared(token: &str, member_id: &str) -> NewEvent {
    recorded(ReferralEvent::LinkShared(pb::LinkShared {
        token: token.into(),
        member_id: member_id.into(),
        channel: pb::ShareChannel::WechatMoments as i32,
        shared_at: Some(to_timestamp(Utc::now())),
    }))
}

fn meta() -> AppendMeta {
    AppendMeta {
        brand_id: "acme".into(),
        correlation_id: uuid::Uuid::new_v4().to_string(),
        causation_id: uuid::Uuid::new_v4().to_string(),
        traceparent: String::new(),
        actor: "test".into(),
        request: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_link_with_100_000_events_loads_from_its_snapshot_and_the_events_after_it() {
    let (session, keyspace) = scanloop_testkit::fresh_keyspace("long_link").await.unwrap();
    let topic = scanloop_testkit::fresh_topic("long_link", 1).await.unwrap();
    let store = EventStore::new(session.clone(), &keyspace).await.unwrap();
    let producer =
        EventProducer::new(&scanloop_testkit::brokers(), Duration::from_secs(10)).unwrap();
    let outbox = Outbox::new(store.clone(), &keyspace, producer, topic)
        .await
        .unwrap();

    // Years of sharing, written as they were before links kept snapshots: the link's creation
    // and then a share per event, 100,000 events in all.
    let (token, member) = ("AAAAAAAAAAAAAAAA", "5f0c6a59-2d2e-4b8e-9a55-3b8f7c1d2e10");
    let stream = link::stream_id("acme", token);
    let created = recorded(ReferralEvent::LinkCreated(pb::LinkCreated {
        token: token.into(),
        member_id: member.into(),
        url: format!("https://s.example/acme/r/{token}"),
        created_at: Some(to_timestamp(Utc::now())),
        ..Default::default()
    }));
    let mut events = vec![created];
    let mut version = 0;
    while version < EVENTS {
        let room = (PER_APPEND - events.len() as u64).min(EVENTS - version - events.len() as u64);
        events.extend((0..room).map(|_| shared(token, member)));
        let count = events.len() as u64;
        store
            .append(&stream, version, &meta(), std::mem::take(&mut events))
            .await
            .unwrap();
        version += count;
    }

    // The first load reads them all once, and leaves a snapshot behind.
    let first = Repository::<Link>::new(outbox.clone())
        .load::<()>(&stream)
        .await
        .unwrap();
    assert_eq!(first.version, EVENTS);
    assert_eq!(first.state.shares, EVENTS - 1);
    assert_eq!(first.replayed, EVENTS);
    let snapshot = store
        .load_snapshot(&stream)
        .await
        .unwrap()
        .expect("a snapshot");
    assert_eq!(snapshot.version, EVENTS);

    // Another process's load reads the snapshot and nothing after it.
    let again = Repository::<Link>::new(outbox.clone())
        .load::<()>(&stream)
        .await
        .unwrap();
    assert_eq!((again.state.shares, again.replayed), (EVENTS - 1, 0));

    // The member shares on: each append past a multiple of the snapshot interval saves a new
    // one, so a load never reads more than the interval.
    let repository = Repository::<Link>::new(outbox.clone());
    for _ in 0..Link::SNAPSHOT_EVERY + 3 {
        repository
            .execute(&stream, &meta(), |link| {
                link::share(link, member, pb::ShareChannel::WechatGroup, Utc::now())
            })
            .await
            .unwrap();
    }
    let later = Repository::<Link>::new(outbox)
        .load::<scanloop_referral::domain::Rejection>(&stream)
        .await
        .unwrap();
    assert_eq!(later.version, EVENTS + Link::SNAPSHOT_EVERY + 3);
    assert_eq!(later.state.shares, EVENTS - 1 + Link::SNAPSHOT_EVERY + 3);
    assert!(
        later.replayed < Link::SNAPSHOT_EVERY,
        "read {} events after the snapshot",
        later.replayed
    );
}
