//! Rebuilding every service's read models from its topic alone: each service's projection runs
//! over its whole topic into a fresh keyspace, as a new consumer group, and every table it
//! declares ([`Projection::TABLES`]) must then equal the running service's, row by row.

#![allow(dead_code)] // not every test file uses each

use std::sync::Arc;

use scanloop_bus::{ConsumerOptions, ConsumerRunner, EventProducer};
use scanloop_eventstore::{Projection, Projector};
use scanloop_storage::{Checkpoints, Migration};
use scylla::client::session::Session;
use tokio_util::sync::CancellationToken;

/// One service of a running world: its keyspace, its topic, and the topics its reactions read.
pub struct Service<'a> {
    pub keyspace: &'a str,
    pub topic: &'a str,
    pub reacts_to: Vec<&'a str>,
}

impl Service<'_> {
    fn projection_group(&self) -> String {
        format!("{}-projections", self.keyspace)
    }

    fn reaction_group(&self) -> String {
        format!("{}-reactions", self.keyspace)
    }
}

/// Waits until nothing moves: every projection and reaction group has handled everything on
/// its topics, and no topic grew meanwhile (a reaction's events are on a topic before the
/// offset that caused them is committed, so a second look that finds the same ends is final).
pub async fn settle(services: &[Service<'_>]) {
    let ends = || async {
        let mut ends = Vec::new();
        for service in services {
            ends.push(scanloop_testkit::records_in(service.topic).await);
        }
        ends
    };
    for _ in 0..10 {
        let before = ends().await;
        for service in services {
            wait_consumed(&service.projection_group(), service.topic).await;
            for topic in &service.reacts_to {
                wait_consumed(&service.reaction_group(), topic).await;
            }
        }
        if ends().await == before {
            return;
        }
    }
    panic!("the topics kept growing after ten rounds of consumers catching up");
}

async fn wait_consumed(group: &str, topic: &str) {
    let done = scanloop_testkit::eventually_value(
        || scanloop_testkit::consumed_to_end(group, topic),
        |done| *done,
    )
    .await;
    assert!(done, "{group} did not consume {topic} to its end");
}

/// A projection replaying one service's topic into a fresh keyspace.
pub struct Replay {
    original: String,
    fresh: String,
    topic: String,
    group: String,
    tables: &'static [&'static str],
    /// Columns of a declared table that something other than the projection writes, left out
    /// of the comparison: (table, columns).
    not_from_the_topic: Vec<(&'static str, &'static [&'static str])>,
}

impl Replay {
    /// Makes a fresh keyspace with the service's `migrations`, its read models there with
    /// `read_models`, and runs them over `service`'s topic from its beginning until `shutdown`.
    pub async fn start<P, Make, Made>(
        session: &Arc<Session>,
        migrations: &[&'static Migration],
        read_models: Make,
        service: &Service<'_>,
        shutdown: &CancellationToken,
    ) -> Self
    where
        P: Projection,
        Make: FnOnce(Arc<Session>, String) -> Made,
        Made: Future<Output = anyhow::Result<P>>,
    {
        let fresh = scanloop_testkit::unique_name("test_replay");
        scanloop_storage::migrate(session, &fresh, 1, "", migrations)
            .await
            .unwrap();
        let read_models = read_models(session.clone(), fresh.clone()).await.unwrap();
        let fresh = fresh.as_str();
        let checkpoints = Checkpoints::new(session.clone(), fresh).await.unwrap();
        let group = format!("{fresh}-replay");
        let producer = EventProducer::new(
            &scanloop_testkit::brokers(),
            std::time::Duration::from_secs(10),
        )
        .unwrap();
        let runner = ConsumerRunner::new(
            ConsumerOptions::new(
                scanloop_testkit::brokers(),
                group.clone(),
                vec![service.topic.to_owned()],
            ),
            Projector(read_models),
            checkpoints,
            producer,
            shutdown.clone(),
        )
        .unwrap();
        tokio::spawn(runner.run());
        Self {
            original: service.keyspace.to_owned(),
            fresh: fresh.to_owned(),
            topic: service.topic.to_owned(),
            group,
            tables: P::TABLES,
            not_from_the_topic: Vec::new(),
        }
    }

    /// Leaves `columns` of `table` out of the comparison: they are written by a command that
    /// records no event, so no replay can rebuild them.
    pub fn except(mut self, table: &'static str, columns: &'static [&'static str]) -> Self {
        self.not_from_the_topic.push((table, columns));
        self
    }

    /// Once the replay has consumed the whole topic, asserts each declared table holds the same
    /// rows in both keyspaces; answers how many rows it compared.
    pub async fn compare(&self, session: &Session) -> usize {
        wait_consumed(&self.group, &self.topic).await;
        let mut compared = 0;
        for table in self.tables {
            let skipped: &[&str] = self
                .not_from_the_topic
                .iter()
                .find(|(name, _)| name == table)
                .map_or(&[], |(_, columns)| columns);
            let original = rows(session, &self.original, table, skipped).await;
            let replayed = rows(session, &self.fresh, table, skipped).await;
            assert_eq!(
                replayed, original,
                "{table}: the replay into {} differs from {}",
                self.fresh, self.original
            );
            compared += original.len();
        }
        compared
    }

    pub fn fresh(&self) -> &str {
        &self.fresh
    }
}

/// Every row of `keyspace.table` as JSON without the `skipped` columns, sorted: a comparison
/// that needs no knowledge of the table's columns.
async fn rows(session: &Session, keyspace: &str, table: &str, skipped: &[&str]) -> Vec<String> {
    let mut rows: Vec<String> = session
        .query_unpaged(format!("SELECT JSON * FROM {keyspace}.{table}"), ())
        .await
        .unwrap()
        .into_rows_result()
        .unwrap()
        .rows::<(String,)>()
        .unwrap()
        .map(|row| {
            let mut row: serde_json::Map<String, serde_json::Value> =
                serde_json::from_str(&row.unwrap().0).unwrap();
            for column in skipped {
                row.remove(*column);
            }
            serde_json::Value::Object(row).to_string()
        })
        .collect();
    rows.sort();
    rows
}
