//! A request id is an idempotency key for one command, for every mutating RPC of the activation
//! service: the same id with the same command gets the first answer and no second effect; the
//! same id with a different payload or another kind of command is refused with INVALID_ARGUMENT
//! and writes nothing. "Nothing written" is read off the write side's stream version, which each
//! command answers with: the next accepted command lands exactly one version later.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failed unwrap is a failed test

mod common;

use scanloop_testkit::assert_request_id_reused as assert_reused;

use common::{BRAND, Service, activation, fresh_env, issue, phone, request_id};
use scanloop_proto::activation::v1 as pb;
use scanloop_proto::activation::v1::activation_service_client::ActivationServiceClient;
use scanloop_proto::common::v1::Money;
use scanloop_testkit::serving::AuthChannel;
use tonic::Code;

fn scan(code: &str, id: &str, region: &str) -> pb::ScanCodeRequest {
    pb::ScanCodeRequest {
        brand_id: BRAND.into(),
        request_id: id.into(),
        code: code.into(),
        region: region.into(),
        scanned_at: None,
    }
}

fn extend(code: &str, id: &str, months: u32) -> pb::ExtendWarrantyRequest {
    pb::ExtendWarrantyRequest {
        brand_id: BRAND.into(),
        request_id: id.into(),
        code: code.into(),
        months,
        reason: pb::ExtensionReason::Goodwill as i32,
    }
}

fn refund(code: &str, id: &str, amount_fen: i64) -> pb::RefundPurchaseRequest {
    pb::RefundPurchaseRequest {
        brand_id: BRAND.into(),
        request_id: id.into(),
        code: code.into(),
        amount: Some(Money {
            amount_fen,
            currency: "CNY".into(),
        }),
        reason: "price adjustment".into(),
    }
}

fn void(code: &str, id: &str, reason: &str) -> pb::VoidWarrantyRequest {
    pb::VoidWarrantyRequest {
        brand_id: BRAND.into(),
        request_id: id.into(),
        code: code.into(),
        reason: reason.into(),
    }
}

async fn issue_with(
    client: &mut ActivationServiceClient<AuthChannel>,
    id: &str,
    quantity: u32,
) -> Result<(String, Vec<String>), tonic::Status> {
    let mut stream = client
        .issue_batch(pb::IssueBatchRequest {
            brand_id: BRAND.into(),
            request_id: id.into(),
            sku: "AC-100".into(),
            product_model: "Air Conditioner 100".into(),
            warranty_months: 24,
            quantity,
            key_id: "k1".into(),
        })
        .await?
        .into_inner();
    let mut batch_id = String::new();
    let mut codes = Vec::new();
    while let Some(message) = stream.message().await? {
        batch_id = message.batch_id;
        codes.extend(message.codes);
    }
    Ok((batch_id, codes))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_mutating_rpc_answers_a_repeat_once_and_refuses_a_reused_id() {
    let env = fresh_env("request_ids").await;
    let service = Service::start(&env).await;
    let mut client = service.client().await;

    // IssueBatch: the same request returns the same batch and codes; other parameters under the
    // same id are refused.
    let issue_id = request_id();
    let (batch_id, codes) = issue_with(&mut client, &issue_id, 3).await.unwrap();
    assert_eq!(
        issue_with(&mut client, &issue_id, 3).await.unwrap(),
        (batch_id.clone(), codes.clone())
    );
    assert_reused(issue_with(&mut client, &issue_id, 4).await);
    let code = codes[0].clone();

    // ScanCode: a repeat and a reused id with another region record nothing.
    let scan_id = request_id();
    let first = client
        .scan_code(scan(&code, &scan_id, "440300"))
        .await
        .unwrap()
        .into_inner();
    let again = client
        .scan_code(scan(&code, &scan_id, "440300"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(again, first);
    assert_reused(client.scan_code(scan(&code, &scan_id, "110000")).await);

    // ActivateWarranty: version 2 = one scan + the activation, so neither refused nor repeated
    // scans wrote anything. A repeat gets the first answer; another buyer under the same id is
    // refused (not ALREADY_EXISTS, never OK); a new id is ALREADY_EXISTS.
    let activate_id = request_id();
    // One request, sent twice: the helper stamps the purchase time at each call.
    let activate = activation(&code, &activate_id);
    let activated = client
        .activate_warranty(activate.clone())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(activated.version, 2);
    let repeated = client
        .activate_warranty(activate.clone())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(repeated, activated);
    let mut other_buyer = activate.clone();
    other_buyer.buyer = phone("13900139000");
    assert_reused(client.activate_warranty(other_buyer).await);
    let status = client
        .activate_warranty(activation(&code, &request_id()))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::AlreadyExists, "{status:?}");

    // ExtendWarranty: a repeat adds nothing; other months under the same id are refused; the
    // activation's id used for an extension is refused (another kind of command).
    let extend_id = request_id();
    let extended = client
        .extend_warranty(extend(&code, &extend_id, 12))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((extended.version, extended.extended_months), (3, 12));
    let repeated = client
        .extend_warranty(extend(&code, &extend_id, 12))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(repeated, extended);
    assert_reused(client.extend_warranty(extend(&code, &extend_id, 6)).await);
    assert_reused(
        client
            .extend_warranty(extend(&code, &activate_id, 12))
            .await,
    );
    // The same id on another code of the brand is refused as well.
    assert_reused(
        client
            .extend_warranty(extend(&codes[1], &extend_id, 12))
            .await,
    );
    let second = client
        .extend_warranty(extend(&code, &request_id(), 6))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (second.version, second.extended_months),
        (4, 18),
        "nothing refused or repeated was written"
    );

    // RefundPurchase: a repeat refunds nothing more; another amount under the same id, or the
    // extension's id, is refused.
    let refund_id = request_id();
    let refunded = client
        .refund_purchase(refund(&code, &refund_id, 100_000))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(refunded.version, 5);
    assert_eq!(
        refunded.refunded_amount.as_ref().unwrap().amount_fen,
        100_000
    );
    let repeated = client
        .refund_purchase(refund(&code, &refund_id, 100_000))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(repeated, refunded);
    assert_reused(
        client
            .refund_purchase(refund(&code, &refund_id, 50_000))
            .await,
    );
    assert_reused(
        client
            .refund_purchase(refund(&code, &extend_id, 100_000))
            .await,
    );

    // VoidWarranty: a repeat is answered with the voided warranty; another reason under the same
    // id is refused.
    let void_id = request_id();
    let voided = client
        .void_warranty(void(&code, &void_id, "changed mind"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(voided.version, 6, "nothing refused or repeated was written");
    assert_eq!(voided.status, pb::WarrantyStatus::Voided as i32);
    let repeated = client
        .void_warranty(void(&code, &void_id, "changed mind"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(repeated, voided);
    assert_reused(
        client
            .void_warranty(void(&code, &void_id, "broken on arrival"))
            .await,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_after_other_commands_gets_the_first_answer() {
    let env = fresh_env("request_ids_first").await;
    let service = Service::start(&env).await;
    let mut client = service.client().await;
    let (_, codes) = issue(&mut client, 1).await;
    let code = &codes[0];
    client
        .activate_warranty(activation(code, &request_id()))
        .await
        .unwrap();
    let extend_id = request_id();
    let first = client
        .extend_warranty(extend(code, &extend_id, 12))
        .await
        .unwrap()
        .into_inner();
    client
        .extend_warranty(extend(code, &request_id(), 6))
        .await
        .unwrap();
    // The retry of the first extension answers as it did then (version 2, 12 months), not with
    // the warranty as it is now (version 3, 18 months).
    let retried = client
        .extend_warranty(extend(code, &extend_id, 12))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((retried.version, retried.extended_months), (2, 12));
    assert_eq!(retried.warranty_ends_at, first.warranty_ends_at);
}
