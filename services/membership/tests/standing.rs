//! Standing changes on time by the timer job, with no further command: a KOC lapses when their
//! engagements leave the window and points expire on their date, and the member's stream,
//! GetMember, the leaderboard and the ledger agree. Two job instances over the same due reviews
//! write one expiry per lot.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failed unwrap is a failed test

mod common;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{BRAND, Cluster, eventually, phone, request_id};
use scanloop_eventstore::DomainEvent as _;
use scanloop_membership::domain::MembershipEvent;
use scanloop_membership::domain::member::{self, lot_id};
use scanloop_proto::membership::v1 as pb;
use scanloop_proto::membership::v1::membership_service_client::MembershipServiceClient;
use scanloop_testkit::serving::AuthChannel;
use scanloop_timers::{DueTimer, TimerError, TimerHandler, TimerRunner, TimerStore};

async fn register(client: &mut MembershipServiceClient<AuthChannel>, number: &str) -> String {
    client
        .register_member(pb::RegisterMemberRequest {
            brand_id: BRAND.into(),
            request_id: request_id(),
            identity: phone(number),
            display_name: format!("member {number}"),
            region: "440300".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .member_id
}

/// Awards `points`; returns the award's request id (which names the lot).
async fn award(
    client: &mut MembershipServiceClient<AuthChannel>,
    member_id: &str,
    points: i64,
) -> String {
    let id = request_id();
    client
        .award_points(pb::AwardPointsRequest {
            brand_id: BRAND.into(),
            request_id: id.clone(),
            member_id: member_id.into(),
            points,
            reason: "review bonus".into(),
        })
        .await
        .unwrap();
    id
}

async fn engage(
    client: &mut MembershipServiceClient<AuthChannel>,
    member_id: &str,
    kind: pb::EngagementKind,
) -> pb::RecordEngagementResponse {
    client
        .record_engagement(pb::RecordEngagementRequest {
            brand_id: BRAND.into(),
            request_id: request_id(),
            member_id: member_id.into(),
            kind: kind as i32,
            occurred_at: None,
        })
        .await
        .unwrap()
        .into_inner()
}

async fn get(client: &mut MembershipServiceClient<AuthChannel>, member_id: &str) -> pb::Member {
    client
        .get_member(pb::GetMemberRequest {
            brand_id: BRAND.into(),
            by: Some(pb::get_member_request::By::MemberId(member_id.into())),
        })
        .await
        .unwrap()
        .into_inner()
}

/// The member's events as stored in its stream.
async fn stream(cluster: &Cluster, member_id: &str) -> Vec<MembershipEvent> {
    let session = scanloop_testkit::session().await.unwrap();
    let store = scanloop_eventstore::EventStore::new(session, &cluster.membership_keyspace)
        .await
        .unwrap();
    store
        .load(&member::stream_id(BRAND, member_id), 0)
        .await
        .unwrap()
        .iter()
        .map(|e| MembershipEvent::decode(&e.event_type, e.schema_version, &e.payload).unwrap())
        .collect()
}

fn count(events: &[MembershipEvent], wanted: fn(&MembershipEvent) -> bool) -> usize {
    events.iter().filter(|e| wanted(e)).count()
}

fn is_lapse(e: &MembershipEvent) -> bool {
    matches!(e, MembershipEvent::KocLapsed(_))
}

fn is_expiry(e: &MembershipEvent) -> bool {
    matches!(e, MembershipEvent::PointsExpired(_))
}

/// The member's row on the brand-wide leaderboard: (score, tier).
async fn board(
    client: &mut MembershipServiceClient<AuthChannel>,
    member_id: &str,
) -> Option<(i64, String)> {
    let page = client
        .list_leaderboard(pb::ListLeaderboardRequest {
            brand_id: BRAND.into(),
            region: String::new(),
            page: None,
        })
        .await
        .unwrap()
        .into_inner();
    page.entries
        .into_iter()
        .find(|e| e.member_id == member_id)
        .map(|e| (e.koc_score, e.tier))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_koc_lapses_and_points_expire_on_time_without_another_command() {
    use pb::EngagementKind::{Comment, Scan, Share};
    let cluster = Cluster::start("standing").await;
    let mut client = cluster.membership.clone();
    let member_id = register(&mut client, "13600000001").await;
    let award_id = award(&mut client, &member_id, 50).await;
    let mut last = None;
    for (kind, times) in [(Scan, 3), (Share, 2), (Comment, 5)] {
        for _ in 0..times {
            last = Some(engage(&mut client, &member_id, kind).await);
        }
    }
    let last = last.unwrap();
    assert!(last.koc_qualified);
    assert_eq!((last.tier.as_str(), last.koc_score), ("junior_sharer", 23));
    let (board_client, board_member) = (client.clone(), member_id.clone());
    let on_board = move || {
        let mut client = board_client.clone();
        let member_id = board_member.clone();
        async move { board(&mut client, &member_id).await }
    };
    eventually(on_board.clone(), |row| {
        row == &Some((23, "junior_sharer".to_owned()))
    })
    .await;

    // A month passes; nobody calls the service. The engagements leave the 30-day window.
    cluster.clock.advance(chrono::Duration::days(31));
    let events = eventually(
        || stream(&cluster, &member_id),
        |events| count(events, is_lapse) > 0,
    )
    .await;
    let lapse = events.iter().position(is_lapse).unwrap();
    assert_eq!(
        events[lapse..],
        [
            MembershipEvent::KocLapsed(pb::KocLapsed {
                member_id: member_id.clone(),
                scans: 0,
                shares: 0,
                comments: 0,
            }),
            MembershipEvent::TierChanged(pb::TierChanged {
                member_id: member_id.clone(),
                from_tier: "junior_sharer".into(),
                to_tier: "member".into(),
            }),
        ],
        "the lapse and the step down, nothing else"
    );
    let now = get(&mut client, &member_id).await;
    assert_eq!(
        (now.koc_qualified, now.tier.as_str(), now.points_balance),
        (false, "member", 50),
        "GetMember agrees; the points have most of a year left"
    );
    let (_, tier) = eventually(on_board, |row| {
        row.as_ref().is_some_and(|(_, tier)| tier == "member")
    })
    .await
    .unwrap();
    assert_eq!(tier, "member", "the leaderboard agrees");

    // The rest of the year passes: the lot expires on its date.
    cluster.clock.advance(chrono::Duration::days(335));
    let events = eventually(
        || stream(&cluster, &member_id),
        |events| count(events, is_expiry) > 0,
    )
    .await;
    let expiry = events.iter().position(is_expiry).unwrap();
    assert_eq!(
        events[expiry],
        MembershipEvent::PointsExpired(pb::PointsExpired {
            member_id: member_id.clone(),
            points: 50,
            lot_ids: vec![lot_id(&member_id, &award_id)],
        })
    );
    assert_eq!(get(&mut client, &member_id).await.points_balance, 0);
    let ledger = eventually(
        || {
            let mut client = client.clone();
            let member_id = member_id.clone();
            async move {
                client
                    .list_points_ledger(pb::ListPointsLedgerRequest {
                        brand_id: BRAND.into(),
                        member_id,
                        page: None,
                    })
                    .await
                    .unwrap()
                    .into_inner()
                    .entries
            }
        },
        |entries| entries.iter().any(|e| e.kind == "expired"),
    )
    .await;
    let kinds: Vec<(i64, &str)> = ledger.iter().map(|e| (e.points, e.kind.as_str())).collect();
    assert_eq!(
        kinds,
        [(-50, "expired"), (50, "earned")],
        "the ledger agrees"
    );

    // Every review that came due ran (the timers are gone), and none wrote twice.
    let session = scanloop_testkit::session().await.unwrap();
    let keyspace = cluster.membership_keyspace.clone();
    eventually(
        || {
            let session = session.clone();
            let keyspace = keyspace.clone();
            async move {
                session
                    .query_unpaged(format!("SELECT key FROM {keyspace}.timers"), ())
                    .await
                    .unwrap()
                    .into_rows_result()
                    .unwrap()
                    .rows_num()
            }
        },
        |rows| *rows == 0,
    )
    .await;
    let events = stream(&cluster, &member_id).await;
    assert_eq!(
        (count(&events, is_lapse), count(&events, is_expiry)),
        (1, 1)
    );
    cluster.stop().await;
}

/// A review handler that makes two runners meet at every item before either handles it, so
/// both run the review of the same member at the same time.
struct Rendezvous {
    inner: scanloop_membership::jobs::MemberReview,
    meetings: Mutex<HashMap<String, Arc<tokio::sync::Barrier>>>,
    fired: Mutex<BTreeMap<String, usize>>,
}

impl TimerHandler for Rendezvous {
    async fn handle(&self, timer: &DueTimer) -> Result<(), TimerError> {
        let name = format!("{} {}", timer.stream_id, timer.key);
        let barrier = self
            .meetings
            .lock()
            .unwrap()
            .entry(name.clone())
            .or_insert_with(|| Arc::new(tokio::sync::Barrier::new(2)))
            .clone();
        // A runner that never comes shows up as an item fired once, below.
        let _ = tokio::time::timeout(Duration::from_secs(10), barrier.wait()).await;
        *self.fired.lock().unwrap().entry(name).or_default() += 1;
        self.inner.handle(timer).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_timer_jobs_reviewing_the_same_members_at_once_write_one_expiry_per_lot() {
    // The service's own job looks only once an hour: the two below do the work.
    let cluster = Cluster::start_with_timer_interval("twojobs", Duration::from_secs(3600)).await;
    let mut client = cluster.membership.clone();
    let mut lots = BTreeMap::new();
    for number in ["13600000011", "13600000012", "13600000013"] {
        let member_id = register(&mut client, number).await;
        for points in [10, 20] {
            let id = award(&mut client, &member_id, points).await;
            lots.insert(lot_id(&member_id, &id), member_id.clone());
        }
    }
    // The service's scheduler has read the six PointsEarned and scheduled their expiry.
    let session = scanloop_testkit::session().await.unwrap();
    let keyspace = cluster.membership_keyspace.clone();
    eventually(
        || {
            let session = session.clone();
            let keyspace = keyspace.clone();
            async move {
                session
                    .query_unpaged(format!("SELECT key FROM {keyspace}.timers"), ())
                    .await
                    .unwrap()
                    .into_rows_result()
                    .unwrap()
                    .rows::<(String,)>()
                    .unwrap()
                    .filter(|row| row.as_ref().is_ok_and(|(key,)| key.starts_with("expiry:")))
                    .count()
            }
        },
        |n| *n == 6,
    )
    .await;

    cluster.clock.advance(chrono::Duration::days(366));
    let clock: scanloop_timers::SharedClock = cluster.clock.clone();
    let store = scanloop_eventstore::EventStore::new(session.clone(), &keyspace)
        .await
        .unwrap();
    let producer =
        scanloop_bus::EventProducer::new(&scanloop_testkit::brokers(), Duration::from_secs(10))
            .unwrap();
    let outbox = scanloop_eventstore::Outbox::new(
        store,
        &keyspace,
        producer,
        cluster.membership_topic.clone(),
    )
    .await
    .unwrap();
    let app = Arc::new(scanloop_membership::app::Membership::new(
        outbox,
        scanloop_pii::IdentityHasher::new(scanloop_config::Secret::new("unused".into())),
        member::Rules::default(),
        clock.clone(),
    ));
    let handler = Arc::new(Rendezvous {
        inner: scanloop_membership::jobs::MemberReview::new(app),
        meetings: Mutex::default(),
        fired: Mutex::default(),
    });
    let timers = TimerStore::new(session.clone(), &keyspace, clock.clone())
        .await
        .unwrap();
    let first = TimerRunner::new(timers.clone(), handler.clone(), clock.clone());
    let second = TimerRunner::new(timers, handler.clone(), clock.clone());
    let now = scanloop_timers::Clock::now(&*clock);
    let (a, b) = tokio::join!(first.run_due(now), second.run_due(now));
    assert_eq!(a.unwrap().handled + b.unwrap().handled, 12);
    let fired = handler.fired.lock().unwrap().clone();
    assert_eq!(fired.len(), 6);
    assert!(
        fired.values().all(|n| *n == 2),
        "both jobs reviewed every member at the same time: {fired:?}"
    );

    // Each lot is written off by exactly one PointsExpired, whichever job won.
    let mut written_off: BTreeMap<String, usize> = BTreeMap::new();
    let members: std::collections::BTreeSet<&String> = lots.values().collect();
    for member_id in members {
        for event in stream(&cluster, member_id).await {
            if let MembershipEvent::PointsExpired(e) = event {
                for lot in e.lot_ids {
                    *written_off.entry(lot).or_default() += 1;
                }
            }
        }
    }
    let expected: BTreeMap<String, usize> = lots.keys().map(|lot| (lot.clone(), 1)).collect();
    assert_eq!(written_off, expected);
    cluster.stop().await;
}
