//! The Python consumer example (`examples/python-consumer`) on the devstack: it decodes what our
//! producer publishes with nothing but the shipped descriptor set, drops a redelivered
//! (stream_id, version) and refuses a schema version it does not know.
//!
//! Needs the example's virtualenv: `examples/python-consumer/setup` (scripts/test runs it).

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failed unwrap is a failed test

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use scanloop_bus::{EventEnvelope, EventProducer};
use scanloop_proto::activation::v1::{WarrantyActivated, WarrantyVoided};
use scanloop_proto::common::v1::{Money, StoredIdentity, stored_identity};
use serde_json::{Value, json};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The example's virtualenv python, where `setup` puts it.
fn python() -> PathBuf {
    let venv = std::env::var_os("SCANLOOP_PYTHON_VENV").map_or_else(
        || {
            PathBuf::from(std::env::var_os("HOME").expect("HOME"))
                .join(".cache/scanloop/python-consumer-venv")
        },
        PathBuf::from,
    );
    let python = venv.join("bin/python");
    assert!(
        python.is_file(),
        "{} is missing: run examples/python-consumer/setup",
        python.display()
    );
    python
}

fn timestamp(seconds: i64) -> Option<prost_types::Timestamp> {
    Some(prost_types::Timestamp { seconds, nanos: 0 })
}

const ACTIVATED: &str = "scanloop.activation.v1.WarrantyActivated";
const VOIDED: &str = "scanloop.activation.v1.WarrantyVoided";

fn envelope(
    version: u64,
    schema_version: u32,
    event_type: &str,
    payload: impl prost::Message,
) -> EventEnvelope {
    EventEnvelope {
        event_id: format!("0190a000-0000-7000-8000-00000000000{version}"),
        event_type: event_type.into(),
        schema_version,
        brand_id: "acme".into(),
        stream_id: "warranty-acme-b1-7".into(),
        version,
        occurred_at: timestamp(1_764_547_200), // 2025-12-01T00:00:00Z
        recorded_at: timestamp(1_764_547_201),
        correlation_id: "c-1".into(),
        causation_id: "c-1".into(),
        // Empty: no `traceparent` header (empty fields are omitted from the headers).
        traceparent: String::new(),
        payload: payload.encode_to_vec(),
        actor: "landing-test".into(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_consumer_decodes_events_by_type_and_drops_redeliveries() {
    let python = python();
    let topic = scanloop_testkit::fresh_topic("pyconsumer", 1)
        .await
        .unwrap();
    let activated = WarrantyActivated {
        batch_id: "b1".into(),
        serial: 7,
        sku: "KT-35".into(),
        buyer: Some(StoredIdentity {
            kind: Some(stored_identity::Kind::WechatUnionid("o-union-1".into())),
        }),
        purchase_amount: Some(Money {
            amount_fen: 329_900,
            currency: "CNY".into(),
        }),
        activated_at: timestamp(1_764_547_200),
        ..Default::default()
    };
    let voided = WarrantyVoided {
        reason: "returned".into(),
        voided_at: timestamp(1_764_633_600),
        activated_at: timestamp(1_764_547_200),
    };
    let first = envelope(1, 1, ACTIVATED, activated);
    let records = [
        first.clone(),
        first, // redelivered, as after a producer retry
        envelope(2, 1, VOIDED, voided),
    ];
    let producer =
        EventProducer::new(&scanloop_testkit::brokers(), Duration::from_secs(10)).unwrap();
    producer.publish_in_order(&topic, &records).await.unwrap();

    let run = tokio::process::Command::new(python)
        .arg(repo().join("examples/python-consumer/consume.py"))
        .args(["--brokers", &scanloop_testkit::brokers(), "--topic", &topic])
        .args(["--from-beginning", "--max-events", "2", "--timeout", "60"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(90), run)
        .await
        .expect("the consumer never finished")
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "consumer failed: {}\n{stdout}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    let lines: Vec<Value> = stdout
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    // It stops after two applied events: the activation, its duplicate dropped, the void.
    assert_eq!(lines.len(), 3, "{stdout}");

    let activation = &lines[0];
    assert_eq!(activation["kind"], "event");
    assert_eq!(activation["key"], "warranty-acme-b1-7");
    assert_eq!(
        activation["envelope"]["event_type"],
        "scanloop.activation.v1.WarrantyActivated"
    );
    assert_eq!(activation["envelope"]["actor"], "landing-test");
    assert_eq!(
        activation["payload"],
        json!({
            "batch_id": "b1",
            "serial": "7",
            "sku": "KT-35",
            "buyer": {"wechat_unionid": "o-union-1"},
            "purchase_amount": {"amount_fen": "329900", "currency": "CNY"},
            "activated_at": "2025-12-01T00:00:00Z",
        })
    );
    assert_eq!(
        activation["headers"],
        json!({
            "scanloop.event_id": "0190a000-0000-7000-8000-000000000001",
            "scanloop.event_type": "scanloop.activation.v1.WarrantyActivated",
            "scanloop.schema_version": "1",
            "scanloop.brand_id": "acme",
            "scanloop.stream_id": "warranty-acme-b1-7",
            "scanloop.version": "1",
            "scanloop.correlation_id": "c-1",
            "scanloop.causation_id": "c-1",
            "scanloop.actor": "landing-test",
        })
    );
    assert_eq!(
        lines[1],
        json!({"kind": "duplicate", "stream_id": "warranty-acme-b1-7", "version": 1})
    );
    assert_eq!(lines[2]["kind"], "event");
    assert_eq!(
        lines[2]["envelope"]["event_type"],
        "scanloop.activation.v1.WarrantyVoided"
    );
    assert_eq!(
        lines[2]["payload"],
        json!({
            "reason": "returned",
            "voided_at": "2025-12-02T00:00:00Z",
            "activated_at": "2025-12-01T00:00:00Z",
        })
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_consumer_refuses_a_schema_version_it_does_not_know() {
    let python = python();
    let topic = scanloop_testkit::fresh_topic("pyconsumer", 1)
        .await
        .unwrap();
    let voided = WarrantyVoided {
        reason: "returned".into(),
        ..Default::default()
    };
    let records = [envelope(1, 9, VOIDED, voided)];
    let producer =
        EventProducer::new(&scanloop_testkit::brokers(), Duration::from_secs(10)).unwrap();
    producer.publish_in_order(&topic, &records).await.unwrap();

    let output = tokio::process::Command::new(python)
        .arg(repo().join("examples/python-consumer/consume.py"))
        .args(["--brokers", &scanloop_testkit::brokers(), "--topic", &topic])
        .args(["--from-beginning", "--max-events", "1", "--timeout", "60"])
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(90), output)
        .await
        .expect("the consumer never finished")
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    // It stops at the event, without committing past it (exit status 3), rather than misread it.
    assert_eq!(output.status.code(), Some(3), "{stdout}");
    let lines: Vec<Value> = stdout
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert_eq!(
        lines,
        [json!({
            "kind": "refused",
            "event_type": "scanloop.activation.v1.WarrantyVoided",
            "schema_version": 9,
            "known": 1,
            "stream_id": "warranty-acme-b1-7",
            "version": 1,
        })]
    );
}
