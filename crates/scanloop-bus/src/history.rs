//! A topic's whole history, read once: what a reconciliation or an audit recomputes from.

use std::collections::BTreeMap;
use std::time::Duration;

use prost::Message as _;
use rdkafka::Message as _;
use rdkafka::consumer::{BaseConsumer, Consumer as _, StreamConsumer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

use crate::EventEnvelope;

/// Every envelope on `topic` from its beginning up to its end when called (each partition read
/// to the high watermark it had then), as a reader that joins no group and commits nothing.
pub async fn everything(brokers: &str, topic: &str) -> anyhow::Result<Vec<EventEnvelope>> {
    let reader = |brokers: &str| {
        ClientConfig::new()
            .set("bootstrap.servers", brokers)
            .set(
                "group.id",
                format!("scanloop-history-{}", std::process::id()),
            )
            .set("enable.auto.commit", "false")
            .clone()
    };
    // (partition, first offset, end offset) of every partition holding anything.
    let probe = reader(brokers);
    let owned_topic = topic.to_owned();
    let ranges = tokio::task::spawn_blocking(move || -> anyhow::Result<Vec<(i32, i64, i64)>> {
        let consumer: BaseConsumer = probe.create()?;
        let timeout = Duration::from_secs(10);
        let metadata = consumer.fetch_metadata(Some(&owned_topic), timeout)?;
        let mut ranges = Vec::new();
        for partition in metadata.topics().iter().flat_map(|t| t.partitions()) {
            let (low, high) = consumer.fetch_watermarks(&owned_topic, partition.id(), timeout)?;
            ranges.push((partition.id(), low, high));
        }
        anyhow::ensure!(!ranges.is_empty(), "topic {owned_topic} has no partitions");
        Ok(ranges)
    })
    .await??;
    let mut assignment = TopicPartitionList::new();
    let mut left: BTreeMap<i32, i64> = BTreeMap::new();
    for (partition, low, high) in ranges.into_iter().filter(|(_, low, high)| high > low) {
        assignment.add_partition_offset(topic, partition, Offset::Offset(low))?;
        left.insert(partition, high);
    }
    let mut envelopes = Vec::new();
    if left.is_empty() {
        return Ok(envelopes);
    }
    let consumer: StreamConsumer = reader(brokers).create()?;
    consumer.assign(&assignment)?;
    while !left.is_empty() {
        let message = tokio::time::timeout(Duration::from_secs(30), consumer.recv())
            .await
            .map_err(|_| anyhow::anyhow!("reading {topic} stalled for 30 s"))??;
        let (partition, offset) = (message.partition(), message.offset());
        if let Some(&end) = left.get(&partition) {
            if offset < end {
                envelopes.push(EventEnvelope::decode(
                    message.payload().unwrap_or_default(),
                )?);
            }
            if offset + 1 >= end {
                left.remove(&partition);
            }
        }
    }
    Ok(envelopes)
}
