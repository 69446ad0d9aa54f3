//! Topic names and topic creation.

use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::error::RDKafkaErrorCode;

/// `scanloop.<service>.events.v1`: the public event topic of a service.
pub fn event_topic(service: &str) -> String {
    format!("scanloop.{service}.events.v1")
}

/// `<topic>.dlq`: where a consumer of `topic` puts the messages it cannot handle.
pub fn dlq_topic(topic: &str) -> String {
    format!("{topic}.dlq")
}

/// Creates `topics` (and their `.dlq` companions) if they do not exist. Events are kept forever
/// (`retention.ms=-1`) so that read models can be rebuilt by replaying from the beginning.
/// Returns the topics it created.
pub async fn ensure_topics(
    brokers: &str,
    topics: &[String],
    partitions: i32,
    replication: i32,
) -> anyhow::Result<Vec<String>> {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()?;
    let min_isr = replication.min(2).to_string();
    let names: Vec<String> = topics
        .iter()
        .flat_map(|t| [t.clone(), dlq_topic(t)])
        .collect();
    let new_topics: Vec<NewTopic<'_>> = names
        .iter()
        .map(|name| {
            NewTopic::new(name, partitions, TopicReplication::Fixed(replication))
                .set("retention.ms", "-1")
                .set("retention.bytes", "-1")
                .set("min.insync.replicas", &min_isr)
        })
        .collect();
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    let results = admin.create_topics(&new_topics, &options).await?;
    let mut created = Vec::new();
    for result in results {
        match result {
            Ok(name) => created.push(name),
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((name, code)) => anyhow::bail!("cannot create topic {name}: {code}"),
        }
    }
    Ok(created)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(event_topic("activation"), "scanloop.activation.events.v1");
        assert_eq!(
            dlq_topic("scanloop.activation.events.v1"),
            "scanloop.activation.events.v1.dlq"
        );
    }
}
