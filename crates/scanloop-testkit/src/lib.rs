//! Test support for integration tests against the devstack (real Kafka, real Cassandra or
//! ScyllaDB): every test gets its own keyspace and its own topics, so tests run in parallel and
//! never see each other's data.

pub mod fuzz;
pub mod requests;
pub mod serving;

use std::sync::Arc;
use std::time::Duration;

use scylla::client::session::Session;

/// Kafka bootstrap servers of the devstack (or `SCANLOOP_KAFKA_BROKERS`).
pub fn brokers() -> String {
    std::env::var("SCANLOOP_KAFKA_BROKERS").unwrap_or_else(|_| "127.0.0.1:9092".to_owned())
}

/// CQL contact points of the devstack (or `SCANLOOP_CQL_NODES`).
pub fn cql_nodes() -> Vec<String> {
    std::env::var("SCANLOOP_CQL_NODES")
        .unwrap_or_else(|_| "127.0.0.1:9042".to_owned())
        .split(',')
        .map(|s| s.trim().to_owned())
        .collect()
}

/// A name no other test uses: `<prefix>_<12 hex digits>`.
pub fn unique_name(prefix: &str) -> String {
    format!(
        "{prefix}_{}",
        &uuid::Uuid::new_v4().simple().to_string()[..12]
    )
}

pub async fn session() -> anyhow::Result<Arc<Session>> {
    scanloop_storage::connect(&cql_nodes(), Duration::from_secs(30)).await
}

/// Drops a test's keyspaces: each costs the devstack Cassandra's heap, and a run of every test
/// would otherwise leave hundreds behind. Cleanup, not the test: each drop is a schema change
/// as migrations send them ([`scanloop_storage::migrate::schema_change`]: up to two minutes, a
/// busy 2-core machine outlasting the session's 30 s, three attempts), and one that still fails
/// leaves its keyspace behind with a warning instead of failing a test that passed.
pub async fn drop_keyspaces(session: &Session, keyspaces: &[&str]) {
    for keyspace in keyspaces {
        let drop = format!("DROP KEYSPACE IF EXISTS {keyspace}");
        if let Err(error) = scanloop_storage::migrate::schema_change(session, &drop).await {
            eprintln!("keyspace {keyspace} left behind: {error}");
        }
    }
}

/// A fresh keyspace with the event store's and the consumer checkpoints' tables.
pub async fn fresh_keyspace(prefix: &str) -> anyhow::Result<(Arc<Session>, String)> {
    let session = session().await?;
    let keyspace = unique_name(&format!("test_{prefix}"));
    let migrations: Vec<_> = scanloop_eventstore::schema::MIGRATIONS
        .iter()
        .chain(scanloop_storage::checkpoints::MIGRATIONS)
        .collect();
    scanloop_storage::migrate(&session, &keyspace, 1, "", &migrations).await?;
    Ok((session, keyspace))
}

/// A fresh event topic (and its `.dlq`), kept forever like the real ones.
pub async fn fresh_topic(prefix: &str, partitions: i32) -> anyhow::Result<String> {
    let topic = unique_name(&format!("test.{prefix}"));
    scanloop_bus::topics::ensure_topics(&brokers(), std::slice::from_ref(&topic), partitions, 1)
        .await?;
    Ok(topic)
}

/// Polls `check` every 50 ms until it returns true or `timeout` passes.
pub async fn eventually<F, Fut>(timeout: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if check().await {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Asserts that a call was refused because its request id was already used for a different
/// request: INVALID_ARGUMENT, saying so (never an OK).
#[allow(clippy::panic)]
pub fn assert_request_id_reused<T: std::fmt::Debug>(result: Result<T, tonic::Status>) {
    match result {
        Err(status) => {
            assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
            assert!(
                status
                    .message()
                    .contains("already used for a different request"),
                "{status:?}"
            );
        }
        Ok(answer) => panic!("a reused request id was answered OK: {answer:?}"),
    }
}

/// Polls `probe` until `check` holds (a positive signal) or 30 s pass; returns the value that
/// satisfied it (what [`eventually`] does for a plain condition). Panics with the last value otherwise.
#[allow(clippy::panic)]
pub async fn eventually_value<T, F, Fut>(mut probe: F, check: impl Fn(&T) -> bool) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = T>,
    T: std::fmt::Debug,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let value = probe().await;
        if check(&value) {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never reached: {value:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Whether consumer group `group` has committed, on every partition of `topic`, the offset after
/// the partition's last record: everything on the topic now has been handled (the consumer
/// runner commits only what its handler finished). False while anything is unknown (the group
/// not formed yet, the broker slow to answer), so it suits a poll.
pub async fn consumed_to_end(group: &str, topic: &str) -> bool {
    use rdkafka::consumer::{BaseConsumer, Consumer as _};
    use rdkafka::{ClientConfig, Offset, TopicPartitionList};
    let (group, topic) = (group.to_owned(), topic.to_owned());
    let probe = move || -> Result<bool, rdkafka::error::KafkaError> {
        let timeout = Duration::from_secs(10);
        // Only asks the group coordinator for offsets: never joins the group.
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", brokers())
            .set("group.id", &group)
            .set("enable.auto.commit", "false")
            .create()?;
        let metadata = consumer.fetch_metadata(Some(&topic), timeout)?;
        let Some(partitions) = metadata.topics().first().map(|t| t.partitions().len()) else {
            return Ok(false);
        };
        let partitions = i32::try_from(partitions).unwrap_or(i32::MAX);
        let mut wanted = TopicPartitionList::new();
        for partition in 0..partitions {
            wanted.add_partition(&topic, partition);
        }
        let committed = consumer.committed_offsets(wanted, timeout)?;
        for partition in 0..partitions {
            let (_, end) = consumer.fetch_watermarks(&topic, partition, timeout)?;
            let offset = committed
                .find_partition(&topic, partition)
                .map(|entry| entry.offset());
            if !(end == 0 || matches!(offset, Some(Offset::Offset(at)) if at >= end)) {
                return Ok(false);
            }
        }
        Ok(true)
    };
    matches!(tokio::task::spawn_blocking(probe).await, Ok(Ok(true)))
}

/// How many records `topic` has ever received (the sum of its partitions' high watermarks), or
/// `None` when the broker does not answer. For a dead-letter topic after [`consumed_to_end`]:
/// whatever a consumer dead-lettered is on it before the source offset is committed.
pub async fn records_in(topic: &str) -> Option<i64> {
    use rdkafka::ClientConfig;
    use rdkafka::consumer::{BaseConsumer, Consumer as _};
    let topic = topic.to_owned();
    let probe = move || -> Result<i64, rdkafka::error::KafkaError> {
        let timeout = Duration::from_secs(10);
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", brokers())
            .create()?;
        let metadata = consumer.fetch_metadata(Some(&topic), timeout)?;
        let mut total = 0;
        for partition in metadata.topics().iter().flat_map(|t| t.partitions()) {
            let (_, high) = consumer.fetch_watermarks(&topic, partition.id(), timeout)?;
            total += high;
        }
        Ok(total)
    };
    tokio::task::spawn_blocking(probe).await.ok()?.ok()
}

/// The envelopes on `topic` once it holds at least `records` (a command answers once its
/// events are durable and publishes them after, so a test reading the topic right after a
/// command waits for this positive signal), or what it holds after 30 s.
pub async fn envelopes_once(
    topic: &str,
    records: i64,
) -> anyhow::Result<Vec<scanloop_bus::EventEnvelope>> {
    eventually(Duration::from_secs(30), || async {
        records_in(topic).await >= Some(records)
    })
    .await;
    envelopes_on(topic).await
}

/// Every envelope on `topic` from the beginning up to its end when called, partition by
/// partition (a reader of its own: it joins no group and commits nothing). Fails if the end is
/// not reached within 30 seconds.
pub async fn envelopes_on(topic: &str) -> anyhow::Result<Vec<scanloop_bus::EventEnvelope>> {
    use prost::Message as _;
    use rdkafka::consumer::{BaseConsumer, Consumer as _};
    use rdkafka::{ClientConfig, Message as _, Offset, TopicPartitionList};
    let topic = topic.to_owned();
    tokio::task::spawn_blocking(move || {
        let timeout = Duration::from_secs(10);
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", brokers())
            .set("group.id", unique_name("test-reader"))
            .set("enable.auto.commit", "false")
            .create()?;
        let metadata = consumer.fetch_metadata(Some(&topic), timeout)?;
        let mut assignment = TopicPartitionList::new();
        // Partition → the offset after its last record now.
        let mut ends = std::collections::HashMap::new();
        for partition in metadata.topics().iter().flat_map(|t| t.partitions()) {
            let (low, high) = consumer.fetch_watermarks(&topic, partition.id(), timeout)?;
            if high > low {
                assignment.add_partition_offset(&topic, partition.id(), Offset::Offset(low))?;
                ends.insert(partition.id(), high);
            }
        }
        let mut envelopes = Vec::new();
        if ends.is_empty() {
            return Ok(envelopes);
        }
        consumer.assign(&assignment)?;
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while !ends.is_empty() {
            anyhow::ensure!(
                std::time::Instant::now() < deadline,
                "{topic}: never read to the end"
            );
            let Some(message) = consumer.poll(Duration::from_millis(200)) else {
                continue;
            };
            let message = message?;
            let Some(&end) = ends.get(&message.partition()) else {
                continue;
            };
            if message.offset() < end {
                envelopes.push(scanloop_bus::EventEnvelope::decode(
                    message.payload().unwrap_or_default(),
                )?);
            }
            if message.offset() + 1 >= end {
                ends.remove(&message.partition());
            }
        }
        Ok(envelopes)
    })
    .await?
}
