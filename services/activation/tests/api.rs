//! The activation API end to end: the real binary on the devstack, called over gRPC.

mod common;

use std::time::Duration;

use common::{BRAND, Service, activation, fresh_env, issue, phone, request_id};
use scanloop_proto::activation::v1 as pb;
use scanloop_proto::common::v1::{BuyerIdentity, Money, PageRequest};
use scanloop_proto::time::to_timestamp;
use tonic::Code;

async fn get_by_code(
    client: &mut pb::activation_service_client::ActivationServiceClient<tonic::transport::Channel>,
    code: &str,
) -> pb::Warranty {
    client
        .get_warranty(pb::GetWarrantyRequest {
            brand_id: BRAND.into(),
            by: Some(pb::get_warranty_request::By::Code(code.into())),
        })
        .await
        .unwrap()
        .into_inner()
}

/// Polls GetWarranty until the read model shows `check`.
async fn eventually_get(
    client: &mut pb::activation_service_client::ActivationServiceClient<tonic::transport::Channel>,
    code: &str,
    check: impl Fn(&pb::Warranty) -> bool,
) -> pb::Warranty {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let warranty = get_by_code(client, code).await;
        if check(&warranty) {
            return warranty;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "read model never showed it: {warranty:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_code_goes_from_issue_to_scan_activation_extension_and_return() {
    let env = fresh_env("flow").await;
    let service = Service::start(&env).await;
    let mut client = service.client().await;

    let (batch_id, codes) = issue(&mut client, 2_500).await;
    assert_eq!(codes.len(), 2_500);
    assert_eq!(
        codes.iter().collect::<std::collections::HashSet<_>>().len(),
        2_500
    );
    let code = codes[41].clone();

    let verified = client
        .verify_code(pb::VerifyCodeRequest {
            brand_id: BRAND.into(),
            code: code.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(verified.authentic);
    assert_eq!(
        (verified.batch_id.as_str(), verified.serial),
        (batch_id.as_str(), 42)
    );

    let scanned = client
        .scan_code(pb::ScanCodeRequest {
            brand_id: BRAND.into(),
            request_id: request_id(),
            code: code.clone(),
            region: "440300".into(),
            scanned_at: None,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!scanned.activated && !scanned.suspicious);
    let far_away = client
        .scan_code(pb::ScanCodeRequest {
            brand_id: BRAND.into(),
            request_id: request_id(),
            code: code.clone(),
            region: "110000".into(),
            scanned_at: None,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(
        far_away.suspicious,
        "Shenzhen then Beijing minutes apart is suspicious"
    );

    let mut request = activation(&code, &request_id());
    request.device_serial = "SN-AC100-0042".into();
    let purchased = request.purchased_at.unwrap();
    let activated = client
        .activate_warranty(request.clone())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(activated.status, pb::WarrantyStatus::Active as i32);
    let ends = activated.warranty_ends_at.unwrap();
    let expected_end = chrono::DateTime::from_timestamp(purchased.seconds, purchased.nanos as u32)
        .unwrap()
        .checked_add_months(chrono::Months::new(24))
        .unwrap();
    assert_eq!(ends.seconds, expected_end.timestamp());
    match activated.buyer.and_then(|b| b.kind) {
        Some(scanloop_proto::common::v1::buyer_identity::Kind::PhoneHash(hash)) => {
            assert_eq!(hash.len(), 64)
        }
        other => panic!("the buyer is stored as a phone hash, got {other:?}"),
    }
    // A retry of the same request is answered with the same warranty.
    let retried = client
        .activate_warranty(request)
        .await
        .unwrap()
        .into_inner();
    assert_eq!(retried.version, activated.version);

    let extended = client
        .extend_warranty(pb::ExtendWarrantyRequest {
            brand_id: BRAND.into(),
            request_id: request_id(),
            code: code.clone(),
            months: 12,
            reason: pb::ExtensionReason::AssistCampaign as i32,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(extended.extended_months, 12);
    assert_eq!(
        extended.warranty_ends_at.unwrap().seconds,
        expected_end
            .checked_add_months(chrono::Months::new(12))
            .unwrap()
            .timestamp()
    );

    // The read models catch up: by code, by device serial, by buyer.
    let seen = eventually_get(&mut client, &code, |w| w.extended_months == 12).await;
    assert_eq!(seen.status, pb::WarrantyStatus::Active as i32);
    assert_eq!(seen.sku, "AC-100");
    assert_eq!(seen.purchase_amount.unwrap().amount_fen, 399_900);
    let by_device = client
        .get_warranty(pb::GetWarrantyRequest {
            brand_id: BRAND.into(),
            by: Some(pb::get_warranty_request::By::SerialNumber(
                "SN-AC100-0042".into(),
            )),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(by_device.code, code);
    let listed = client
        .list_warranties(pb::ListWarrantiesRequest {
            brand_id: BRAND.into(),
            buyer: phone("+86 138 0013 8000"),
            page: None,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.warranties.len(), 1);
    assert_eq!(listed.warranties[0].code, code);

    let voided = client
        .void_warranty(pb::VoidWarrantyRequest {
            brand_id: BRAND.into(),
            request_id: request_id(),
            code: code.clone(),
            reason: "returned within 7 days".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(voided.status, pb::WarrantyStatus::Voided as i32);
    eventually_get(&mut client, &code, |w| {
        w.status == pb::WarrantyStatus::Voided as i32
    })
    .await;

    // An untouched code of the batch reads as not activated.
    let fresh = get_by_code(&mut client, &codes[0]).await;
    assert_eq!(fresh.status, pb::WarrantyStatus::NotActivated as i32);
    assert_eq!(fresh.product_model, "Air Conditioner 100");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn of_fifty_concurrent_activations_of_one_code_exactly_one_succeeds() {
    let env = fresh_env("race").await;
    let service = Service::start(&env).await;
    let mut client = service.client().await;
    let (_, codes) = issue(&mut client, 1).await;
    let code = codes[0].clone();

    let attempts = (0..50).map(|_| {
        let mut client = client.clone();
        let request = activation(&code, &request_id());
        tokio::spawn(async move { client.activate_warranty(request).await })
    });
    let outcomes: Vec<_> = futures::future::join_all(attempts)
        .await
        .into_iter()
        .map(|joined| joined.unwrap())
        .collect();
    let winners = outcomes.iter().filter(|o| o.is_ok()).count();
    assert_eq!(winners, 1, "exactly one activation wins");
    for outcome in outcomes.iter().filter_map(|o| o.as_ref().err()) {
        assert_eq!(outcome.code(), Code::AlreadyExists, "{outcome:?}");
        assert!(
            outcome.message().contains("already activated at"),
            "{}",
            outcome.message()
        );
    }

    // The stream holds one activation.
    let session = scanloop_testkit::session().await.unwrap();
    let store = scanloop_eventstore::EventStore::new(session, &env.keyspace)
        .await
        .unwrap();
    let verified = client
        .verify_code(pb::VerifyCodeRequest {
            brand_id: BRAND.into(),
            code: code.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    let stream = format!("warranty-{}-{}", verified.batch_id, verified.serial);
    let events = store.load(&stream, 0).await.unwrap();
    let activations = events
        .iter()
        .filter(|e| e.event_type == "scanloop.activation.v1.WarrantyActivated")
        .count();
    assert_eq!(activations, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_the_right_status_and_writes_nothing() {
    let env = fresh_env("bad").await;
    let service = Service::start(&env).await;
    let mut client = service.client().await;
    let (batch_id, codes) = issue(&mut client, 3).await;
    let code = codes[0].clone();
    let forged = {
        let (prefix, body) = code.rsplit_once('.').unwrap();
        let mut body: Vec<char> = body.chars().collect();
        body[30] = if body[30] == 'A' { 'B' } else { 'A' };
        format!("{prefix}.{}", body.into_iter().collect::<String>())
    };

    let base = activation(&code, &request_id());
    let cases: Vec<(&str, pb::ActivateWarrantyRequest, Code)> = vec![
        (
            "no brand",
            pb::ActivateWarrantyRequest {
                brand_id: String::new(),
                ..base.clone()
            },
            Code::InvalidArgument,
        ),
        (
            "no request id",
            pb::ActivateWarrantyRequest {
                request_id: String::new(),
                ..base.clone()
            },
            Code::InvalidArgument,
        ),
        (
            "no code",
            pb::ActivateWarrantyRequest {
                code: String::new(),
                ..base.clone()
            },
            Code::InvalidArgument,
        ),
        (
            "malformed code",
            pb::ActivateWarrantyRequest {
                code: "acme/k1.NOTACODE".into(),
                ..base.clone()
            },
            Code::InvalidArgument,
        ),
        (
            "forged code",
            pb::ActivateWarrantyRequest {
                code: forged.clone(),
                ..base.clone()
            },
            Code::InvalidArgument,
        ),
        (
            "other brand",
            pb::ActivateWarrantyRequest {
                brand_id: "globex".into(),
                ..base.clone()
            },
            Code::InvalidArgument,
        ),
        (
            "no buyer",
            pb::ActivateWarrantyRequest {
                buyer: None,
                ..base.clone()
            },
            Code::InvalidArgument,
        ),
        (
            "bad phone",
            pb::ActivateWarrantyRequest {
                buyer: phone("12345"),
                ..base.clone()
            },
            Code::InvalidArgument,
        ),
        (
            "empty buyer",
            pb::ActivateWarrantyRequest {
                buyer: Some(BuyerIdentity { kind: None }),
                ..base.clone()
            },
            Code::InvalidArgument,
        ),
        (
            "no channel",
            pb::ActivateWarrantyRequest {
                channel: None,
                ..base.clone()
            },
            Code::InvalidArgument,
        ),
        (
            "store without id",
            pb::ActivateWarrantyRequest {
                channel: Some(pb::PurchaseChannel {
                    kind: pb::PurchaseChannelKind::Store as i32,
                    id: String::new(),
                }),
                ..base.clone()
            },
            Code::InvalidArgument,
        ),
        (
            "no amount",
            pb::ActivateWarrantyRequest {
                purchase_amount: None,
                ..base.clone()
            },
            Code::InvalidArgument,
        ),
        (
            "negative amount",
            pb::ActivateWarrantyRequest {
                purchase_amount: Some(Money {
                    amount_fen: -1,
                    currency: "CNY".into(),
                }),
                ..base.clone()
            },
            Code::InvalidArgument,
        ),
        (
            "dollars",
            pb::ActivateWarrantyRequest {
                purchase_amount: Some(Money {
                    amount_fen: 100,
                    currency: "USD".into(),
                }),
                ..base.clone()
            },
            Code::InvalidArgument,
        ),
        (
            "no purchase time",
            pb::ActivateWarrantyRequest {
                purchased_at: None,
                ..base.clone()
            },
            Code::InvalidArgument,
        ),
        (
            "future purchase",
            pb::ActivateWarrantyRequest {
                purchased_at: Some(to_timestamp(chrono::Utc::now() + chrono::Duration::days(2))),
                ..base.clone()
            },
            Code::InvalidArgument,
        ),
    ];
    for (name, request, expected) in cases {
        let status = client.activate_warranty(request).await.expect_err(name);
        assert_eq!(status.code(), expected, "{name}: {}", status.message());
        assert!(!status.message().is_empty(), "{name} needs a message");
        assert!(
            !status.message().contains("13800138000"),
            "{name} must not echo the phone number"
        );
    }

    let extend_inactive = client
        .extend_warranty(pb::ExtendWarrantyRequest {
            brand_id: BRAND.into(),
            request_id: request_id(),
            code: code.clone(),
            months: 12,
            reason: pb::ExtensionReason::Goodwill as i32,
        })
        .await
        .unwrap_err();
    assert_eq!(extend_inactive.code(), Code::FailedPrecondition);
    let void_inactive = client
        .void_warranty(pb::VoidWarrantyRequest {
            brand_id: BRAND.into(),
            request_id: request_id(),
            code: code.clone(),
            reason: "return".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(void_inactive.code(), Code::FailedPrecondition);
    for quantity in [0, 1_000_001] {
        let refused = client
            .issue_batch(pb::IssueBatchRequest {
                brand_id: BRAND.into(),
                request_id: request_id(),
                sku: "AC".into(),
                product_model: "AC".into(),
                warranty_months: 12,
                quantity,
                key_id: "k1".into(),
            })
            .await
            .expect_err("refused");
        assert_eq!(refused.code(), Code::InvalidArgument, "quantity {quantity}");
    }
    let verified_forged = client
        .verify_code(pb::VerifyCodeRequest {
            brand_id: BRAND.into(),
            code: forged,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!verified_forged.authentic);
    assert!(verified_forged.reason.contains("not authentic"));
    let unknown_device = client
        .get_warranty(pb::GetWarrantyRequest {
            brand_id: BRAND.into(),
            by: Some(pb::get_warranty_request::By::SerialNumber(
                "NO-SUCH-SN".into(),
            )),
        })
        .await
        .unwrap_err();
    assert_eq!(unknown_device.code(), Code::NotFound);
    let bad_token = client
        .list_warranties(pb::ListWarrantiesRequest {
            brand_id: BRAND.into(),
            buyer: phone("13800138000"),
            page: Some(PageRequest {
                page_size: 10,
                page_token: "!!".into(),
            }),
        })
        .await
        .unwrap_err();
    assert_eq!(bad_token.code(), Code::InvalidArgument);

    // None of the refused commands wrote anything to the code's stream.
    let session = scanloop_testkit::session().await.unwrap();
    let store = scanloop_eventstore::EventStore::new(session, &env.keyspace)
        .await
        .unwrap();
    let events = store
        .load(&format!("warranty-{batch_id}-1"), 0)
        .await
        .unwrap();
    assert!(events.is_empty(), "refused commands wrote {events:?}");

    // A return after the window is refused once the product was bought long ago.
    let mut old = activation(&codes[1], &request_id());
    old.purchased_at = Some(to_timestamp(
        chrono::Utc::now() - chrono::Duration::days(40),
    ));
    client.activate_warranty(old).await.unwrap();
    let late = client
        .void_warranty(pb::VoidWarrantyRequest {
            brand_id: BRAND.into(),
            request_id: request_id(),
            code: codes[1].clone(),
            reason: "return".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(late.code(), Code::FailedPrecondition);
    assert!(
        late.message().contains("return window"),
        "{}",
        late.message()
    );
}
