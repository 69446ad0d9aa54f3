//! Reading a topic from its current end, as the benchmarks and the load generator watch what the
//! services publish during their run: assigned partitions only (no group is joined, nothing is
//! committed), so watching never disturbs the services' own consumer groups.

use std::time::Duration;

use rdkafka::consumer::{Consumer as _, StreamConsumer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

/// A consumer of every partition of `topic`, positioned at each partition's end.
pub fn from_end(brokers: &str, topic: &str) -> anyhow::Result<StreamConsumer> {
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set(
            "group.id",
            format!("scanloop-watch-{}", uuid::Uuid::new_v4()),
        )
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "false")
        .create()?;
    let assignment = tokio::task::block_in_place(|| -> anyhow::Result<TopicPartitionList> {
        let timeout = Duration::from_secs(10);
        let metadata = consumer.fetch_metadata(Some(topic), timeout)?;
        let partitions: Vec<i32> = metadata
            .topics()
            .iter()
            .flat_map(|t| t.partitions())
            .map(|p| p.id())
            .collect();
        anyhow::ensure!(!partitions.is_empty(), "topic {topic} has no partitions");
        let mut assignment = TopicPartitionList::new();
        for partition in partitions {
            let (_, end) = consumer.fetch_watermarks(topic, partition, timeout)?;
            assignment.add_partition_offset(topic, partition, Offset::Offset(end))?;
        }
        Ok(assignment)
    })?;
    consumer.assign(&assignment)?;
    Ok(consumer)
}
