//! The timer job against the devstack's Cassandra: items fire when due and once handled are
//! gone; failures keep their item; a crashed pass loses nothing; two runners leave nothing
//! behind; a runner away for a year reads only the buckets that hold items.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failed unwrap is a failed test

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::SubsecRound as _;

use scanloop_timers::{
    DueTimer, SharedClock, ShiftedClock, Timer, TimerError, TimerHandler, TimerRunner, TimerStore,
};

/// Records every call; fails the keys in `failing` for now; discards kind "bogus"; never
/// returns for the keys in `stuck`.
#[derive(Default)]
struct Recorder {
    calls: Mutex<Vec<String>>,
    failing: Mutex<BTreeSet<String>>,
    stuck: BTreeSet<String>,
}

impl Recorder {
    fn calls(&self) -> Vec<String> {
        self.calls.lock().unwrap().clone()
    }
}

impl TimerHandler for Recorder {
    async fn handle(&self, timer: &DueTimer) -> Result<(), TimerError> {
        if timer.kind == "bogus" {
            return Err(TimerError::Discard("no such kind".into()));
        }
        self.calls.lock().unwrap().push(timer.key.clone());
        if self.stuck.contains(&timer.key) {
            std::future::pending::<()>().await;
        }
        if self.failing.lock().unwrap().contains(&timer.key) {
            return Err(TimerError::Retry(anyhow::anyhow!("not now")));
        }
        Ok(())
    }
}

async fn store(name: &str, clock: SharedClock) -> TimerStore {
    let session = scanloop_testkit::session().await.unwrap();
    let keyspace = scanloop_testkit::unique_name(&format!("test_timers_{name}"));
    let migrations: Vec<_> = scanloop_timers::schema::MIGRATIONS.iter().collect();
    scanloop_storage::migrate(&session, &keyspace, 1, "", &migrations)
        .await
        .unwrap();
    TimerStore::new(session, &keyspace, clock).await.unwrap()
}

fn timer(stream_id: &str, key: &str, due_in: chrono::Duration, clock: &ShiftedClock) -> Timer {
    use scanloop_timers::Clock as _;
    Timer {
        due_at: clock.now() + due_in,
        brand_id: "acme".into(),
        stream_id: stream_id.into(),
        kind: "test".into(),
        key: key.into(),
    }
}

fn runner(
    store: &TimerStore,
    handler: &Arc<Recorder>,
    clock: &SharedClock,
) -> TimerRunner<Arc<Recorder>> {
    TimerRunner::new(store.clone(), handler.clone(), clock.clone())
        .with_settle(chrono::Duration::seconds(60))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn items_fire_when_due_once_and_late_ones_fire_at_once() {
    use scanloop_timers::Clock as _;
    let clock = ShiftedClock::new();
    let shared: SharedClock = clock.clone();
    let store = store("due", shared.clone()).await;
    let handler = Arc::new(Recorder::default());
    let runner = runner(&store, &handler, &shared);
    let hour = chrono::Duration::hours(1);

    let in_an_hour = timer("s-1", "in-1h", hour, &clock);
    store.schedule(&in_an_hour).await.unwrap();
    store
        .schedule(&timer("s-2", "in-2h", hour * 2, &clock))
        .await
        .unwrap();
    store
        .schedule(&timer("s-3", "a-day-late", -hour * 24, &clock))
        .await
        .unwrap();
    // The same key for the same due time is the same item.
    store.schedule(&in_an_hour).await.unwrap();

    let report = runner.run_due(clock.now()).await.unwrap();
    assert_eq!(report.handled, 1);
    assert_eq!(handler.calls(), ["a-day-late"]);

    clock.advance(chrono::Duration::minutes(90));
    let report = runner.run_due(clock.now()).await.unwrap();
    assert_eq!((report.handled, report.retried), (1, 0));
    assert_eq!(handler.calls(), ["a-day-late", "in-1h"]);

    clock.advance(hour);
    let report = runner.run_due(clock.now()).await.unwrap();
    assert_eq!(report.handled, 1);
    assert_eq!(handler.calls(), ["a-day-late", "in-1h", "in-2h"]);

    // Handled items are gone: another pass finds nothing.
    let report = runner.run_due(clock.now()).await.unwrap();
    assert_eq!(report.handled, 0);
    assert_eq!(handler.calls().len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_item_stays_and_holds_its_shards_cursor_until_it_succeeds() {
    use scanloop_timers::Clock as _;
    let clock = ShiftedClock::new();
    let shared: SharedClock = clock.clone();
    let store = store("retry", shared.clone()).await;
    let handler = Arc::new(Recorder::default());
    handler.failing.lock().unwrap().insert("flaky".into());
    let runner = runner(&store, &handler, &shared);

    let flaky = store
        .schedule(&timer("s-1", "flaky", chrono::Duration::minutes(1), &clock))
        .await
        .unwrap();
    store
        .schedule(&timer("s-2", "fine", chrono::Duration::minutes(1), &clock))
        .await
        .unwrap();
    let mut bogus = timer("s-3", "bogus-1", chrono::Duration::minutes(1), &clock);
    bogus.kind = "bogus".into();
    store.schedule(&bogus).await.unwrap();
    clock.advance(chrono::Duration::hours(2));

    let report = runner.run_due(clock.now()).await.unwrap();
    assert_eq!(
        (report.handled, report.retried, report.discarded),
        (1, 1, 1)
    );
    let cursor = store.cursor(flaky.shard).await.unwrap().unwrap();
    assert!(
        cursor <= flaky.fire_at,
        "the cursor stays at the failed item ({cursor} > {})",
        flaky.fire_at
    );

    let report = runner.run_due(clock.now()).await.unwrap();
    assert_eq!(
        (report.handled, report.retried, report.discarded),
        (0, 1, 0)
    );

    handler.failing.lock().unwrap().clear();
    let report = runner.run_due(clock.now()).await.unwrap();
    assert_eq!(
        (report.handled, report.retried, report.discarded),
        (1, 0, 0)
    );
    let mut calls = handler.calls();
    calls.sort();
    assert_eq!(calls, ["fine", "flaky", "flaky", "flaky"]);
    let cursor = store.cursor(flaky.shard).await.unwrap().unwrap();
    assert!(
        cursor > flaky.fire_at,
        "the cursor moved past the handled item"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pass_cut_short_in_its_handler_loses_nothing() {
    use scanloop_timers::Clock as _;
    let clock = ShiftedClock::new();
    let shared: SharedClock = clock.clone();
    let store = store("crash", shared.clone()).await;
    store
        .schedule(&timer("s-1", "slow", chrono::Duration::minutes(5), &clock))
        .await
        .unwrap();
    clock.advance(chrono::Duration::minutes(10));

    // The first runner's handler never returns; its pass is dropped as a crashed process's.
    let stuck = Arc::new(Recorder {
        stuck: ["slow".to_owned()].into(),
        ..Recorder::default()
    });
    let crashed = runner(&store, &stuck, &shared);
    let outcome = tokio::time::timeout(Duration::from_secs(2), crashed.run_due(clock.now())).await;
    assert!(outcome.is_err(), "the stuck pass cannot finish");
    assert_eq!(stuck.calls(), ["slow"]);

    let healthy = Arc::new(Recorder::default());
    let report = runner(&store, &healthy, &shared)
        .run_due(clock.now())
        .await
        .unwrap();
    assert_eq!(report.handled, 1);
    assert_eq!(healthy.calls(), ["slow"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_runners_at_once_handle_every_item_and_leave_none_behind() {
    use scanloop_timers::Clock as _;
    let clock = ShiftedClock::new();
    let shared: SharedClock = clock.clone();
    let store = store("two", shared.clone()).await;
    for i in 0..200 {
        let due_in = chrono::Duration::seconds(i % 50);
        store
            .schedule(&timer(&format!("s-{i}"), &format!("k-{i}"), due_in, &clock))
            .await
            .unwrap();
    }
    clock.advance(chrono::Duration::minutes(5));
    let (a, b) = (Arc::new(Recorder::default()), Arc::new(Recorder::default()));
    let (ra, rb) = (runner(&store, &a, &shared), runner(&store, &b, &shared));
    let now = clock.now();
    let (first, second) = tokio::join!(ra.run_due(now), rb.run_due(now));
    let (first, second) = (first.unwrap(), second.unwrap());

    let mut fired: BTreeMap<String, usize> = BTreeMap::new();
    for key in a.calls().into_iter().chain(b.calls()) {
        *fired.entry(key).or_default() += 1;
    }
    assert_eq!(fired.len(), 200, "every item fired");
    assert!(fired.values().all(|n| (1..=2).contains(n)));
    assert_eq!(
        first.handled + second.handled,
        fired.values().sum::<usize>()
    );

    let after = runner(&store, &a, &shared)
        .run_due(clock.now())
        .await
        .unwrap();
    assert_eq!(after.handled, 0, "nothing left behind");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runner_away_for_a_year_reads_only_the_buckets_holding_items() {
    use scanloop_timers::Clock as _;
    let clock = ShiftedClock::new();
    let shared: SharedClock = clock.clone();
    let store = store("year", shared.clone()).await;
    for (key, days) in [("d1", 1), ("d200", 200), ("d365", 365)] {
        store
            .schedule(&timer(
                "one-stream",
                key,
                chrono::Duration::days(days),
                &clock,
            ))
            .await
            .unwrap();
    }
    let handler = Arc::new(Recorder::default());
    clock.advance(chrono::Duration::days(366));
    let report = runner(&store, &handler, &shared)
        .run_due(clock.now())
        .await
        .unwrap();
    assert_eq!(report.handled, 3);
    assert_eq!(
        report.buckets_read, 3,
        "one stream, one shard, three hours with items"
    );
    assert_eq!(handler.calls(), ["d1", "d200", "d365"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_runner_fires_what_this_process_schedules_without_a_safety_pass() {
    let clock = ShiftedClock::new();
    let shared: SharedClock = clock.clone();
    let store = store("woken", shared.clone()).await;
    let handler = Arc::new(Recorder::default());
    // The safety pass is an hour away: only the in-memory due times can start a pass.
    let running = runner(&store, &handler, &shared)
        .with_interval(Duration::from_millis(50))
        .with_safety_interval(Duration::from_secs(3600));
    let shutdown = tokio_util::sync::CancellationToken::new();
    let job = tokio::spawn(running.run(shutdown.clone()));
    let hour = chrono::Duration::hours(1);
    // Neither is due at the start-up pass; the later one is known before the first is due.
    store
        .schedule(&timer("s-1", "in-1h", hour, &clock))
        .await
        .unwrap();
    store
        .schedule(&timer("s-2", "in-2h", hour * 2, &clock))
        .await
        .unwrap();

    clock.advance(hour + chrono::Duration::seconds(1));
    let first = scanloop_testkit::eventually(Duration::from_secs(10), || {
        let handler = handler.clone();
        async move { handler.calls() == ["in-1h"] }
    })
    .await;
    clock.advance(hour);
    let second = scanloop_testkit::eventually(Duration::from_secs(10), || {
        let handler = handler.clone();
        async move { handler.calls() == ["in-1h", "in-2h"] }
    })
    .await;
    shutdown.cancel();
    job.await.unwrap();
    assert!(first && second, "calls: {:?}", handler.calls());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cursor_an_older_build_recorded_is_where_the_runner_resumes() {
    use scanloop_timers::Clock as _;
    let clock = ShiftedClock::new();
    let shared: SharedClock = clock.clone();
    let session = scanloop_testkit::session().await.unwrap();
    let keyspace = scanloop_testkit::unique_name("test_timers_upgrade");
    let migrations: Vec<_> = scanloop_timers::schema::MIGRATIONS.iter().collect();
    scanloop_storage::migrate(&session, &keyspace, 1, "", &migrations)
        .await
        .unwrap();
    let store = TimerStore::new(session.clone(), &keyspace, shared.clone())
        .await
        .unwrap();
    let shard = scanloop_timers::store::shard_of("old-stream");
    // The previous build kept the cursor in `timer_positions`, stamped with the position in µs.
    let recorded = (clock.now() - chrono::Duration::hours(2)).trunc_subsecs(3);
    session
        .query_unpaged(
            format!(
                "UPDATE {keyspace}.timer_positions USING TIMESTAMP ? SET position = ? \
                 WHERE shard = ?"
            ),
            (recorded.timestamp_micros(), recorded, shard),
        )
        .await
        .unwrap();
    assert_eq!(store.cursor(shard).await.unwrap(), Some(recorded));

    store
        .schedule(&timer(
            "old-stream",
            "in-1h",
            chrono::Duration::hours(1),
            &clock,
        ))
        .await
        .unwrap();
    clock.advance(chrono::Duration::days(30));
    let handler = Arc::new(Recorder::default());
    let report = runner(&store, &handler, &shared)
        .run_due(clock.now())
        .await
        .unwrap();
    assert_eq!(report.handled, 1);
    assert_eq!(handler.calls(), ["in-1h"]);
    // The cursor moved on (in the new table, stamped far below the clock, so a clock a month
    // ahead writes what ScyllaDB accepts), and a second pass finds nothing.
    let moved = store.cursor(shard).await.unwrap().unwrap();
    assert!(moved > recorded, "cursor {moved} did not pass {recorded}");
    let again = runner(&store, &handler, &shared)
        .run_due(clock.now())
        .await
        .unwrap();
    assert_eq!(again.handled, 0);
    scanloop_testkit::drop_keyspaces(&session, &[&keyspace]).await;
}

/// A bucket's index row is written once per store; every item of the bucket still fires, and
/// so do those another store (another process) schedules into it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn items_sharing_a_bucket_all_fire_whichever_store_scheduled_them() {
    use chrono::Timelike as _;
    use scanloop_timers::Clock as _;
    let clock = ShiftedClock::new();
    let shared: SharedClock = clock.clone();
    let session = scanloop_testkit::session().await.unwrap();
    let keyspace = scanloop_testkit::unique_name("test_timers_shared_bucket");
    let migrations: Vec<_> = scanloop_timers::schema::MIGRATIONS.iter().collect();
    scanloop_storage::migrate(&session, &keyspace, 1, "", &migrations)
        .await
        .unwrap();
    let here = TimerStore::new(session.clone(), &keyspace, shared.clone())
        .await
        .unwrap();
    let elsewhere = TimerStore::new(session, &keyspace, shared.clone())
        .await
        .unwrap();
    let minutes = chrono::Duration::minutes;
    // To the start of the next hour: the three items fall in one hour, on one stream's shard.
    clock.advance(minutes(60 - i64::from(clock.now().minute())));
    for (key, due_in) in [("m10", 10), ("m20", 20)] {
        here.schedule(&timer("one-stream", key, minutes(due_in), &clock))
            .await
            .unwrap();
    }
    elsewhere
        .schedule(&timer("one-stream", "m30", minutes(30), &clock))
        .await
        .unwrap();
    let handler = Arc::new(Recorder::default());
    clock.advance(minutes(45));
    let report = runner(&here, &handler, &shared)
        .run_due(clock.now())
        .await
        .unwrap();
    assert_eq!((report.handled, report.buckets_read), (3, 1));
    assert_eq!(handler.calls(), ["m10", "m20", "m30"]);
}
