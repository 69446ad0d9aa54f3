//! Activation's reaction to referral's AssistCompleted: the real binary on the devstack, the
//! completions published to its referral topic as the referral service's outbox would.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failed unwrap is a failed test

mod common;

use std::time::Duration;

use chrono::{DateTime, Months, Utc};
use common::{BRAND, Env, Service, activation, fresh_env, issue, request_id};
use prost::Message as _;
use scanloop_bus::{EventEnvelope, EventProducer};
use scanloop_proto::activation::v1 as pb;
use scanloop_proto::activation::v1::activation_service_client::ActivationServiceClient;
use scanloop_proto::referral::v1 as referral;
use scanloop_proto::time::{from_timestamp, to_timestamp};
use scanloop_testkit::serving::AuthChannel;

type Client = ActivationServiceClient<AuthChannel>;

/// Publishes referral events to the test's referral topic.
struct Referral {
    producer: EventProducer,
    topic: String,
}

impl Referral {
    fn new(env: &Env) -> Self {
        Referral {
            producer: EventProducer::new(&scanloop_testkit::brokers(), Duration::from_secs(10))
                .unwrap(),
            topic: env.referral_topic.clone(),
        }
    }

    async fn publish(&self, envelope: &EventEnvelope) {
        self.producer
            .publish_in_order(&self.topic, std::slice::from_ref(envelope))
            .await
            .unwrap();
    }
}

/// The completion of `assist_id` for the warranty `activated`, as event `version` of the
/// assist's stream, with a fresh event id.
fn completion(assist_id: &str, activated: &pb::Warranty, version: u64) -> EventEnvelope {
    let payload = referral::AssistCompleted {
        assist_id: assist_id.into(),
        member_id: uuid::Uuid::new_v4().to_string(),
        campaign_id: "invite-3-friends".into(),
        warranty: Some(referral::WarrantyRef {
            batch_id: activated.batch_id.clone(),
            serial: activated.serial,
        }),
        extension_months: 12,
    };
    let event_id = uuid::Uuid::now_v7().to_string();
    EventEnvelope {
        event_id: event_id.clone(),
        event_type: "scanloop.referral.v1.AssistCompleted".into(),
        schema_version: 1,
        brand_id: BRAND.into(),
        stream_id: format!("assist-{BRAND}-{assist_id}"),
        version,
        occurred_at: Some(to_timestamp(Utc::now())),
        recorded_at: Some(to_timestamp(Utc::now())),
        correlation_id: event_id.clone(),
        causation_id: event_id,
        traceparent: String::new(),
        actor: "member-app-test".into(),
        payload: payload.encode_to_vec(),
    }
}

async fn activate(client: &mut Client, code: &str) -> pb::Warranty {
    client
        .activate_warranty(activation(code, &request_id()))
        .await
        .unwrap()
        .into_inner()
}

/// Polls GetWarranty (the read model) until it shows `check`.
async fn eventually_get(
    client: &Client,
    code: &str,
    check: impl Fn(&pb::Warranty) -> bool,
) -> pb::Warranty {
    let probe = || {
        let mut client = client.clone();
        let code = code.to_owned();
        async move {
            client
                .get_warranty(pb::GetWarrantyRequest {
                    brand_id: BRAND.into(),
                    by: Some(pb::get_warranty_request::By::Code(code)),
                })
                .await
                .unwrap()
                .into_inner()
        }
    };
    scanloop_testkit::eventually_value(probe, check).await
}

/// The warranty's end to the millisecond: what the read model keeps (a command's answer has
/// the nanoseconds too).
fn ends_at(warranty: &pb::Warranty) -> DateTime<Utc> {
    let end = from_timestamp(warranty.warranty_ends_at.as_ref()).unwrap();
    DateTime::from_timestamp_millis(end.timestamp_millis()).unwrap()
}

/// Everything published so far has been handled: by the reaction (its offsets committed past the
/// referral topic's end, nothing dead-lettered), and whatever it appended has been projected.
async fn all_handled(env: &Env) {
    for (group, topic) in [
        (&env.reaction_group, &env.referral_topic),
        (&env.group, &env.topic),
    ] {
        scanloop_testkit::eventually_value(
            || scanloop_testkit::consumed_to_end(group, topic),
            |done| *done,
        )
        .await;
    }
    let dead_letters = scanloop_bus::topics::dlq_topic(&env.referral_topic);
    assert_eq!(
        scanloop_testkit::records_in(&dead_letters).await,
        Some(0),
        "nothing was dead-lettered"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_completed_assist_extends_its_warranty_by_its_months_once_however_often_it_arrives() {
    let env = fresh_env("assist").await;
    let service = Service::start(&env).await;
    let mut client = service.client().await;
    let referral = Referral::new(&env);
    let (_, codes) = issue(&mut client, 2).await;
    let bound = activate(&mut client, &codes[0]).await;
    let marker = activate(&mut client, &codes[1]).await;
    // 24 months from the purchase (common::issue), plus the campaign's 12, by the calendar.
    let expected_end = ends_at(&bound).checked_add_months(Months::new(12)).unwrap();

    let assist_id = uuid::Uuid::new_v4().to_string();
    let completed = completion(&assist_id, &bound, 3);
    referral.publish(&completed).await;
    let extended = eventually_get(&client, &codes[0], |w| w.extended_months == 12).await;
    assert_eq!(ends_at(&extended), expected_end);
    assert_eq!(extended.status, pb::WarrantyStatus::Active as i32);

    // The same record again (a redelivery), and the same assist completing again as another
    // event of its stream (a republish or a replay under a new id): neither extends.
    referral.publish(&completed).await;
    let again = completion(&assist_id, &bound, 4);
    assert_ne!(again.event_id, completed.event_id);
    referral.publish(&again).await;
    // A later completion of another assist for another warranty is extended: the consumer is
    // past the duplicates.
    referral
        .publish(&completion(&uuid::Uuid::new_v4().to_string(), &marker, 3))
        .await;
    let marker_extended = eventually_get(&client, &codes[1], |w| w.extended_months == 12).await;
    assert_eq!(
        ends_at(&marker_extended),
        ends_at(&marker)
            .checked_add_months(Months::new(12))
            .unwrap()
    );
    all_handled(&env).await;

    let after = eventually_get(&client, &codes[0], |_| true).await;
    assert_eq!(after.extended_months, 12);
    assert_eq!(ends_at(&after), expected_end);
    assert_eq!(
        after.version, extended.version,
        "the duplicates appended nothing to the warranty"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_completion_for_a_voided_warranty_extends_nothing_and_holds_nothing_up() {
    let env = fresh_env("assist_void").await;
    let service = Service::start(&env).await;
    let mut client = service.client().await;
    let referral = Referral::new(&env);
    let (_, codes) = issue(&mut client, 2).await;
    let returned = activate(&mut client, &codes[0]).await;
    let voided = client
        .void_warranty(pb::VoidWarrantyRequest {
            brand_id: BRAND.into(),
            request_id: request_id(),
            code: codes[0].clone(),
            reason: "returned within 7 days".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(voided.status, pb::WarrantyStatus::Voided as i32);
    let kept = activate(&mut client, &codes[1]).await;

    referral
        .publish(&completion(&uuid::Uuid::new_v4().to_string(), &returned, 5))
        .await;
    referral
        .publish(&completion(&uuid::Uuid::new_v4().to_string(), &kept, 5))
        .await;
    eventually_get(&client, &codes[1], |w| w.extended_months == 12).await;
    // The voided warranty's completion was handled and let go, not retried nor dead-lettered.
    all_handled(&env).await;

    let after = eventually_get(&client, &codes[0], |_| true).await;
    assert_eq!(after.status, pb::WarrantyStatus::Voided as i32);
    assert_eq!(after.extended_months, 0);
    assert_eq!(ends_at(&after), ends_at(&returned));
    assert_eq!(after.version, voided.version);
}
