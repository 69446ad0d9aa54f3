//! RefundPurchase end to end: the real binary on the devstack, called over gRPC. Partial refunds
//! of a sale add up to its purchase at most, each is published as PurchaseRefunded naming the
//! sale (its activated_at) for payouts, a request id is an idempotency key, a voided warranty is
//! not refunded, and a resale starts from nothing refunded. "Nothing written" is read off the
//! event store (the code's stream) and the topic, once the read model shows the last accepted
//! command (a positive signal).

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failed unwrap is a failed test

mod common;

use std::collections::BTreeMap;

use common::{BRAND, Env, Service, activation, fresh_env, issue, request_id};
use scanloop_activation::domain::warranty::stream_id;
use scanloop_bus::EventEnvelope;
use scanloop_proto::activation::v1 as pb;
use scanloop_proto::activation::v1::activation_service_client::ActivationServiceClient;
use scanloop_proto::common::v1::Money;
use scanloop_testkit::assert_request_id_reused as assert_reused;
use scanloop_testkit::serving::AuthChannel;
use tonic::Code;

type Client = ActivationServiceClient<AuthChannel>;

const PURCHASE_REFUNDED: &str = "scanloop.activation.v1.PurchaseRefunded";
const WARRANTY_VOIDED: &str = "scanloop.activation.v1.WarrantyVoided";

fn cny(amount_fen: i64) -> Option<Money> {
    Some(Money {
        amount_fen,
        currency: "CNY".into(),
    })
}

fn refund(code: &str, id: &str, amount_fen: i64) -> pb::RefundPurchaseRequest {
    pb::RefundPurchaseRequest {
        brand_id: BRAND.into(),
        request_id: id.into(),
        code: code.into(),
        amount: cny(amount_fen),
        reason: "price adjustment".into(),
    }
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

/// The event types of a code's stream, in order, straight from the event store.
async fn stream_event_types(env: &Env, warranty: &pb::Warranty) -> Vec<String> {
    let session = scanloop_testkit::session().await.unwrap();
    let store = scanloop_eventstore::EventStore::new(session, &env.keyspace)
        .await
        .unwrap();
    let stream = stream_id(
        BRAND,
        warranty.batch_id.parse().unwrap(),
        warranty.serial as u32,
    );
    store
        .load(&stream, 0)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.event_type.rsplit('.').next().unwrap().to_owned())
        .collect()
}

/// Every envelope on `topic` from the beginning up to its end now.
async fn envelopes_on(topic: &str) -> Vec<EventEnvelope> {
    scanloop_testkit::envelopes_on(topic).await.unwrap()
}

/// The payloads of `event_type` on the warranty's stream, once each (the outbox may publish an
/// event twice: duplicates share the event id), in stream order.
fn published<M: prost::Message + Default>(
    envelopes: &[EventEnvelope],
    warranty: &pb::Warranty,
    event_type: &str,
) -> Vec<M> {
    let stream = format!("warranty-{BRAND}-{}-{}", warranty.batch_id, warranty.serial);
    let by_version: BTreeMap<u64, &EventEnvelope> = envelopes
        .iter()
        .filter(|e| e.stream_id == stream && e.event_type == event_type)
        .map(|e| (e.version, e))
        .collect();
    by_version
        .values()
        .map(|e| M::decode(e.payload.as_slice()).unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partial_refunds_are_capped_by_the_purchase_published_per_sale_and_idempotent() {
    let env = fresh_env("refund").await;
    let service = Service::start(&env).await;
    let mut client = service.client().await;
    let (_, codes) = issue(&mut client, 2).await;
    let code = codes[0].clone();

    // Purchase ¥3,999 (399,900 fen); nothing refunded yet.
    let activated = client
        .activate_warranty(activation(&code, &request_id()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(activated.purchase_amount, cny(399_900));
    assert_eq!(activated.refunded_amount, cny(0));

    // 30% refunded: the answer and the read model show it.
    let first_id = request_id();
    let first = client
        .refund_purchase(refund(&code, &first_id, 119_970))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(first.status, pb::WarrantyStatus::Active as i32);
    assert_eq!(first.refunded_amount, cny(119_970));
    assert_eq!(first.purchase_amount, cny(399_900));
    assert_eq!(first.version, 2);

    // The same request again: the same answer, nothing more refunded. The same id with another
    // amount: refused.
    let repeated = client
        .refund_purchase(refund(&code, &first_id, 119_970))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(repeated, first);
    assert_reused(
        client
            .refund_purchase(refund(&code, &first_id, 50_000))
            .await,
    );

    // More than the 279,930 fen left: refused, naming what is left.
    let over = client
        .refund_purchase(refund(&code, &request_id(), 279_931))
        .await
        .unwrap_err();
    assert_eq!(over.code(), Code::FailedPrecondition, "{over:?}");
    assert_eq!(
        over.message(),
        "a refund of 279931 fen is more than the 279930 fen left to refund of this sale \
         (purchase 399900 fen, refunded 119970 fen so far)"
    );

    // Bad input is INVALID_ARGUMENT with a message saying what to send.
    let bad = [
        ("no code", refund(" ", &request_id(), 100)),
        ("no amount", {
            let mut r = refund(&code, &request_id(), 100);
            r.amount = None;
            r
        }),
        ("zero", refund(&code, &request_id(), 0)),
        ("negative", refund(&code, &request_id(), -100)),
        ("dollars", {
            let mut r = refund(&code, &request_id(), 100);
            r.amount = Some(Money {
                amount_fen: 100,
                currency: "USD".into(),
            });
            r
        }),
        ("long reason", {
            let mut r = refund(&code, &request_id(), 100);
            r.reason = "x".repeat(257);
            r
        }),
    ];
    for (name, request) in bad {
        let status = client.refund_purchase(request).await.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{name}: {status:?}");
        let expected = match name {
            "no code" => "code is required",
            "no amount" => "amount is required: the refund in fen",
            "zero" => "amount must be more than 0 fen (got 0)",
            "negative" => "amount must be more than 0 fen (got -100)",
            "dollars" => "amount must be in CNY (fen), like the purchase; got currency \"USD\"",
            _ => "reason is at most 256 characters",
        };
        assert!(status.message().starts_with(expected), "{name}: {status:?}");
    }

    // A code never activated has no purchase to refund.
    let never = client
        .refund_purchase(refund(&codes[1], &request_id(), 100))
        .await
        .unwrap_err();
    assert_eq!(never.code(), Code::FailedPrecondition, "{never:?}");
    assert!(never.message().contains("not activated"), "{never:?}");

    // The read model shows the refund; by then everything up to it is on the topic. The stream
    // holds the activation and the one refund: nothing refused or repeated was written.
    let seen = eventually_get(&client, &code, |w| w.version == 2).await;
    assert_eq!(seen.refunded_amount, cny(119_970));
    assert_eq!(
        stream_event_types(&env, &activated).await,
        ["WarrantyActivated", "PurchaseRefunded"]
    );
    let never_activated = pb::Warranty {
        serial: 2,
        ..activated.clone()
    };
    assert!(stream_event_types(&env, &never_activated).await.is_empty());
    let envelopes = envelopes_on(&env.topic).await;
    let refunds: Vec<pb::PurchaseRefunded> = published(&envelopes, &activated, PURCHASE_REFUNDED);
    assert_eq!(refunds.len(), 1, "{refunds:?}");
    let event = &refunds[0];
    assert_eq!(event.amount, cny(119_970));
    assert_eq!(event.refunded_total, cny(119_970));
    assert_eq!(event.purchase_amount, cny(399_900));
    assert_eq!(event.reason, "price adjustment");
    assert_eq!(event.activated_at, activated.activated_at);
    assert!(event.refunded_at.is_some());

    // Returned: the void names the sale too, and a voided warranty is not refunded.
    let voided = client
        .void_warranty(pb::VoidWarrantyRequest {
            brand_id: BRAND.into(),
            request_id: request_id(),
            code: code.clone(),
            reason: "returned".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(voided.version, 3);
    assert_eq!(voided.refunded_amount, cny(119_970));
    let after_void = client
        .refund_purchase(refund(&code, &request_id(), 100))
        .await
        .unwrap_err();
    assert_eq!(
        after_void.code(),
        Code::FailedPrecondition,
        "{after_void:?}"
    );
    assert!(
        after_void.message().contains("was voided"),
        "{after_void:?}"
    );
    let seen = eventually_get(&client, &code, |w| w.version == 3).await;
    assert_eq!(seen.status, pb::WarrantyStatus::Voided as i32);
    assert_eq!(seen.refunded_amount, cny(119_970));
    assert_eq!(
        stream_event_types(&env, &activated).await,
        ["WarrantyActivated", "PurchaseRefunded", "WarrantyVoided"]
    );
    let envelopes = envelopes_on(&env.topic).await;
    let voids: Vec<pb::WarrantyVoided> = published(&envelopes, &activated, WARRANTY_VOIDED);
    assert_eq!(voids.len(), 1, "{voids:?}");
    assert_eq!(voids[0].activated_at, activated.activated_at);
    assert_eq!(
        published::<pb::PurchaseRefunded>(&envelopes, &activated, PURCHASE_REFUNDED).len(),
        1
    );

    // Resold after the return: a new sale with nothing refunded, whose refunds name it.
    let mut resale = activation(&code, &request_id());
    resale.buyer = common::phone("13900139000");
    resale.purchased_at = Some(scanloop_proto::time::to_timestamp(chrono::Utc::now()));
    resale.purchase_amount = cny(299_900);
    let resold = client.activate_warranty(resale).await.unwrap().into_inner();
    assert_eq!(resold.refunded_amount, cny(0));
    assert_ne!(resold.activated_at, activated.activated_at);
    let seen = eventually_get(&client, &code, |w| w.version == 4).await;
    assert_eq!(seen.refunded_amount, cny(0));
    let whole = client
        .refund_purchase(refund(&code, &request_id(), 299_900))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(whole.refunded_amount, cny(299_900));
    let seen = eventually_get(&client, &code, |w| w.version == 5).await;
    assert_eq!(seen.refunded_amount, cny(299_900));
    let envelopes = envelopes_on(&env.topic).await;
    let refunds: Vec<pb::PurchaseRefunded> = published(&envelopes, &activated, PURCHASE_REFUNDED);
    assert_eq!(refunds.len(), 2, "{refunds:?}");
    assert_eq!(refunds[1].amount, cny(299_900));
    assert_eq!(refunds[1].refunded_total, cny(299_900));
    assert_eq!(refunds[1].purchase_amount, cny(299_900));
    assert_eq!(refunds[1].activated_at, resold.activated_at);

    drop(client);
    drop(service);
    let session = scanloop_testkit::session().await.unwrap();
    scanloop_testkit::drop_keyspaces(&session, &[&env.keyspace]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_code_of_no_issued_batch_is_not_found() {
    let env = fresh_env("refund_nf").await;
    let service = Service::start(&env).await;
    let mut client = service.client().await;
    // A code signed with the service's key for a batch that was never issued.
    let signer = scanloop_activation::domain::code::CodeSigner::new(
        scanloop_config::Secret::new("test-code-secret".to_owned()),
        "https://w.scanloop.cn",
    );
    let batch_id = uuid::Uuid::new_v4();
    let unknown = signer.encode(&scanloop_activation::domain::code::CodeId {
        brand_id: BRAND.into(),
        key_id: "k1".into(),
        batch_id,
        serial: 1,
    });
    let status = client
        .refund_purchase(refund(&unknown, &request_id(), 100))
        .await
        .unwrap_err();
    assert_eq!(
        (status.code(), status.message()),
        (
            Code::NotFound,
            format!("batch {batch_id} was never issued").as_str()
        )
    );

    drop(client);
    drop(service);
    let session = scanloop_testkit::session().await.unwrap();
    scanloop_testkit::drop_keyspaces(&session, &[&env.keyspace]).await;
}
