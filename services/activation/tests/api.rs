//! The activation API end to end: the real binary on the devstack, called over gRPC.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failed unwrap is a failed test

mod common;

use common::{BRAND, Service, activation, fresh_env, issue, phone, request_id};
use scanloop_activation::domain::warranty::stream_id;
use scanloop_proto::activation::v1 as pb;
use scanloop_proto::common::v1::{BuyerIdentity, Money, PageRequest};
use scanloop_proto::time::to_timestamp;
use tonic::Code;

async fn get_by_code(
    client: &mut pb::activation_service_client::ActivationServiceClient<
        scanloop_testkit::serving::AuthChannel,
    >,
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
    client: &mut pb::activation_service_client::ActivationServiceClient<
        scanloop_testkit::serving::AuthChannel,
    >,
    code: &str,
    check: impl Fn(&pb::Warranty) -> bool,
) -> pb::Warranty {
    let probe = || {
        let mut client = client.clone();
        let code = code.to_owned();
        async move { get_by_code(&mut client, &code).await }
    };
    scanloop_testkit::eventually_value(probe, check).await
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
    let stream = stream_id(
        BRAND,
        verified.batch_id.parse().unwrap(),
        verified.serial as u32,
    );
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
        (
            "purchase before the batch existed",
            pb::ActivateWarrantyRequest {
                purchased_at: Some(prost_types::Timestamp {
                    seconds: 86_400,
                    nanos: 0,
                }),
                ..base.clone()
            },
            Code::InvalidArgument,
        ),
        (
            "amount above the ceiling",
            pb::ActivateWarrantyRequest {
                purchase_amount: Some(Money {
                    amount_fen: i64::MAX,
                    currency: "CNY".into(),
                }),
                ..base.clone()
            },
            Code::InvalidArgument,
        ),
        (
            "foreign host",
            pb::ActivateWarrantyRequest {
                code: code.replace("https://w.scanloop.cn/", "https://evil.example.com/"),
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
        .load(&stream_id(BRAND, batch_id.parse().unwrap(), 1), 0)
        .await
        .unwrap();
    assert!(events.is_empty(), "refused commands wrote {events:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_return_after_the_window_is_refused() {
    // A purchase cannot predate its batch, so the window is closed by configuration instead:
    // with a window of 0 days, a product bought this morning can no longer be returned.
    let env = fresh_env("window").await;
    let service = Service::start_with(&env, &[("SCANLOOP_RETURN_WINDOW_DAYS", "0")]).await;
    let mut client = service.client().await;
    let (_, codes) = issue(&mut client, 2).await;
    client
        .activate_warranty(activation(&codes[1], &request_id()))
        .await
        .unwrap();
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

/// The events of one code's warranty stream, straight from the event store.
async fn warranty_events(
    env: &common::Env,
    brand_id: &str,
    batch_id: &str,
    serial: u32,
) -> Vec<scanloop_eventstore::RecordedEvent> {
    let session = scanloop_testkit::session().await.unwrap();
    let store = scanloop_eventstore::EventStore::new(session, &env.keyspace)
        .await
        .unwrap();
    store
        .load(&stream_id(brand_id, batch_id.parse().unwrap(), serial), 0)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn impossible_purchases_are_refused_naming_the_rule() {
    let env = fresh_env("purchase").await;
    // acme has its own ceiling of ¥10,000; globex has the default ¥1,000,000.
    let service = Service::start_with(
        &env,
        &[("SCANLOOP_PURCHASE_MAX_FEN_BY_BRAND", "acme=1000000")],
    )
    .await;
    let mut client = service.client().await;
    let (batch_id, codes) = issue(&mut client, 1).await;

    let mut in_1970 = activation(&codes[0], &request_id());
    in_1970.purchased_at = Some(prost_types::Timestamp {
        seconds: 86_400,
        nanos: 0,
    });
    let refused = client.activate_warranty(in_1970).await.unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument);
    assert!(
        refused.message().contains(
            "purchased_at 1970-01-02T00:00:00+00:00 is before this code's batch was issued"
        ),
        "{}",
        refused.message()
    );
    assert!(refused.message().contains("at most 24 hours"));

    for amount_fen in [i64::MAX, 1_000_001] {
        let mut request = activation(&codes[0], &request_id());
        request.purchase_amount = Some(Money {
            amount_fen,
            currency: "CNY".into(),
        });
        let refused = client.activate_warranty(request).await.unwrap_err();
        assert_eq!(refused.code(), Code::InvalidArgument);
        assert!(
            refused
                .message()
                .contains("above this brand's ceiling of 1000000 fen"),
            "{}",
            refused.message()
        );
    }
    assert!(warranty_events(&env, BRAND, &batch_id, 1).await.is_empty());

    // At the ceiling is accepted, and the warranty ends 24 months after the purchase.
    let mut at_ceiling = activation(&codes[0], &request_id());
    at_ceiling.purchase_amount = Some(Money {
        amount_fen: 1_000_000,
        currency: "CNY".into(),
    });
    let warranty = client
        .activate_warranty(at_ceiling)
        .await
        .unwrap()
        .into_inner();
    assert_eq!(warranty.purchase_amount.unwrap().amount_fen, 1_000_000);

    // Another brand has the default ceiling, ¥1,000,000.
    let (_, globex_codes) = common::issue_for(&mut client, "globex", 1).await;
    let mut huge = activation(&globex_codes[0], &request_id());
    huge.brand_id = "globex".into();
    huge.purchase_amount = Some(Money {
        amount_fen: 100_000_001,
        currency: "CNY".into(),
    });
    let refused = client.activate_warranty(huge.clone()).await.unwrap_err();
    assert!(
        refused.message().contains("ceiling of 100000000 fen"),
        "{}",
        refused.message()
    );
    // The corrected purchase is a new request: the refused one's id stays bound to it.
    huge.purchase_amount = Some(Money {
        amount_fen: 100_000_000,
        currency: "CNY".into(),
    });
    let reused = client.activate_warranty(huge.clone()).await.unwrap_err();
    assert!(
        reused
            .message()
            .contains("already used for a different request"),
        "{reused:?}"
    );
    huge.request_id = request_id();
    client.activate_warranty(huge).await.unwrap();
}

/// GetWarranty by device serial number.
async fn get_by_device(
    client: &mut pb::activation_service_client::ActivationServiceClient<
        scanloop_testkit::serving::AuthChannel,
    >,
    brand_id: &str,
    serial_number: &str,
) -> Result<pb::Warranty, tonic::Status> {
    client
        .get_warranty(pb::GetWarrantyRequest {
            brand_id: brand_id.into(),
            by: Some(pb::get_warranty_request::By::SerialNumber(
                serial_number.into(),
            )),
        })
        .await
        .map(|r| r.into_inner())
}

async fn eventually_by_device(
    client: &mut pb::activation_service_client::ActivationServiceClient<
        scanloop_testkit::serving::AuthChannel,
    >,
    serial_number: &str,
    check: impl Fn(&pb::Warranty) -> bool,
) -> pb::Warranty {
    let probe = || {
        let mut client = client.clone();
        let serial_number = serial_number.to_owned();
        async move { get_by_device(&mut client, BRAND, &serial_number).await }
    };
    let found =
        scanloop_testkit::eventually_value(probe, |found| found.as_ref().is_ok_and(&check)).await;
    found.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_serial_backs_one_active_warranty_and_no_claim_is_hidden() {
    let env = fresh_env("device").await;
    let service = Service::start(&env).await;
    let mut client = service.client().await;
    let (batch_id, codes) = issue(&mut client, 2).await;

    let mut first = activation(&codes[0], &request_id());
    first.device_serial = "SN-DEV-1".into();
    client.activate_warranty(first).await.unwrap();

    // Another buyer's activation of another code with the same device (typed differently).
    let mut second = activation(&codes[1], &request_id());
    second.buyer = phone("13900139000");
    second.device_serial = " sn-dev-1 ".into();
    let refused = client.activate_warranty(second.clone()).await.unwrap_err();
    assert_eq!(refused.code(), Code::AlreadyExists);
    assert_eq!(
        refused.message(),
        format!(
            "device serial SN-DEV-1 already belongs to the warranty of serial 1 in batch \
             {batch_id}; a device backs one active warranty (void that one first if the unit \
             was returned)"
        )
    );
    assert!(warranty_events(&env, BRAND, &batch_id, 2).await.is_empty());
    let shown = eventually_by_device(&mut client, "SN-DEV-1", |_| true).await;
    assert_eq!(shown.code, codes[0]);

    // The first unit is returned; the device may now back the other code's warranty.
    client
        .void_warranty(pb::VoidWarrantyRequest {
            brand_id: BRAND.into(),
            request_id: request_id(),
            code: codes[0].clone(),
            reason: "returned".into(),
        })
        .await
        .unwrap();
    let moved = client.activate_warranty(second).await.unwrap().into_inner();
    assert_eq!(moved.status, pb::WarrantyStatus::Active as i32);

    // By serial number: the active warranty; both codes stay in the device's read model.
    let shown = eventually_by_device(&mut client, "sn-dev-1", |w| w.code == codes[1]).await;
    assert_eq!(shown.status, pb::WarrantyStatus::Active as i32);
    let session = scanloop_testkit::session().await.unwrap();
    let read_models = scanloop_activation::projections::ReadModels::new(session, &env.keyspace)
        .await
        .unwrap();
    let mut rows = read_models.find_by_device(BRAND, "SN-DEV-1").await.unwrap();
    rows.sort();
    let batch: uuid::Uuid = batch_id.parse().unwrap();
    assert_eq!(rows, vec![(batch, 1), (batch, 2)]);
    let first_now = get_by_code(&mut client, &codes[0]).await;
    assert_eq!(first_now.status, pb::WarrantyStatus::Voided as i32);
    assert_eq!(first_now.device_serial, "SN-DEV-1");
    // Another brand never sees it.
    let elsewhere = get_by_device(&mut client, "globex", "SN-DEV-1").await;
    assert_eq!(elsewhere.unwrap_err().code(), Code::NotFound);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn of_twenty_codes_racing_for_one_device_serial_exactly_one_gets_it() {
    let env = fresh_env("devrace").await;
    let service = Service::start(&env).await;
    let mut client = service.client().await;
    let (batch_id, codes) = issue(&mut client, 20).await;

    let attempts = codes.iter().enumerate().map(|(i, code)| {
        let mut client = client.clone();
        let mut request = activation(code, &request_id());
        request.buyer = phone(&format!("139{:08}", i));
        request.device_serial = "SN-RACE".into();
        tokio::spawn(async move { client.activate_warranty(request).await })
    });
    let outcomes: Vec<_> = futures::future::join_all(attempts)
        .await
        .into_iter()
        .map(|joined| joined.unwrap())
        .collect();
    let winners: Vec<u64> = outcomes
        .iter()
        .filter_map(|o| o.as_ref().ok().map(|w| w.get_ref().serial))
        .collect();
    assert_eq!(winners.len(), 1, "exactly one code gets the device");
    for refused in outcomes.iter().filter_map(|o| o.as_ref().err()) {
        assert_eq!(refused.code(), Code::AlreadyExists, "{refused:?}");
        assert!(
            refused.message().contains(&format!(
                "already belongs to the warranty of serial {}",
                winners[0]
            )),
            "{}",
            refused.message()
        );
    }
    // Only the winner's stream holds an activation; the others hold nothing.
    for serial in 1..=20u32 {
        let events = warranty_events(&env, BRAND, &batch_id, serial).await;
        let expected = usize::from(u64::from(serial) == winners[0]);
        assert_eq!(events.len(), expected, "serial {serial}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_returned_unit_is_activated_again_only_for_its_resale() {
    let env = fresh_env("resale").await;
    let service = Service::start(&env).await;
    let mut client = service.client().await;
    let (_, codes) = issue(&mut client, 1).await;
    let code = codes[0].clone();

    let mut original = activation(&code, &request_id());
    original.device_serial = "SN-RESALE-1".into();
    let first = client
        .activate_warranty(original.clone())
        .await
        .unwrap()
        .into_inner();
    client
        .extend_warranty(pb::ExtendWarrantyRequest {
            brand_id: BRAND.into(),
            request_id: request_id(),
            code: code.clone(),
            months: 12,
            reason: pb::ExtensionReason::Goodwill as i32,
        })
        .await
        .unwrap();
    client
        .void_warranty(pb::VoidWarrantyRequest {
            brand_id: BRAND.into(),
            request_id: request_id(),
            code: code.clone(),
            reason: "returned".into(),
        })
        .await
        .unwrap();

    // The returned sale itself (bought before the void) cannot be activated again.
    let mut again = activation(&code, &request_id());
    again.buyer = phone("13900139000");
    again.purchased_at = original.purchased_at;
    let refused = client.activate_warranty(again.clone()).await.unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition);
    assert!(
        refused.message().contains("was voided (returned) at"),
        "{}",
        refused.message()
    );
    assert!(!refused.message().contains("already activated"));

    // The resale (bought after the void) gets a new warranty, for the new buyer, with the
    // returned unit's device serial.
    again.device_serial = "SN-RESALE-1".into();
    again.purchased_at = Some(to_timestamp(chrono::Utc::now()));
    again.request_id = request_id();
    let resold = client
        .activate_warranty(again.clone())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(resold.status, pb::WarrantyStatus::Active as i32);
    assert_eq!(resold.extended_months, 0);
    assert_eq!(resold.void_reason, "");
    assert!(resold.voided_at.is_none());
    assert_ne!(resold.buyer, first.buyer);
    assert_eq!(resold.version, 4, "activated, extended, voided, activated");

    // The read model follows: active again, for the new buyer; the earlier buyer no longer
    // lists the code, the new one does.
    let seen = eventually_get(&mut client, &code, |w| w.version == 4).await;
    assert_eq!(seen.status, pb::WarrantyStatus::Active as i32);
    assert_eq!(seen.extended_months, 0);
    assert!(seen.voided_at.is_none() && seen.void_reason.is_empty());
    assert_eq!(seen.buyer, resold.buyer);
    let by_device = get_by_device(&mut client, BRAND, "SN-RESALE-1")
        .await
        .unwrap();
    assert_eq!((by_device.code, by_device.version), (code.clone(), 4));
    let list = |buyer: &str| pb::ListWarrantiesRequest {
        brand_id: BRAND.into(),
        buyer: phone(buyer),
        page: None,
    };
    let earlier = client
        .list_warranties(list("13800138000"))
        .await
        .unwrap()
        .into_inner();
    assert!(earlier.warranties.is_empty(), "{earlier:?}");
    let new_buyer = client
        .list_warranties(list("13900139000"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(new_buyer.warranties.len(), 1);
    assert_eq!(new_buyer.warranties[0].code, code);

    // And the resale's warranty is activated once, like any other.
    again.request_id = request_id();
    let twice = client.activate_warranty(again).await.unwrap_err();
    assert_eq!(twice.code(), Code::AlreadyExists);
    assert!(twice.message().contains("already activated at"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_brand_cannot_reach_a_batch_or_warranty_even_with_a_code_signed_for_it() {
    let env = fresh_env("tenant").await;
    let service = Service::start(&env).await;
    let mut client = service.client().await;
    let (batch_id, codes) = issue(&mut client, 1).await;
    let mut request = activation(&codes[0], &request_id());
    request.device_serial = "SN-TENANT-1".into();
    client.activate_warranty(request).await.unwrap();

    // A globex code naming acme's batch and serial, signed under globex's own key (as if batch
    // ids collided or a key were misused): the code key alone would let it through.
    let signer = scanloop_activation::domain::code::CodeSigner::new(
        scanloop_config::Secret::new("test-code-secret".to_owned()),
        "https://w.scanloop.cn",
    );
    let crossing = signer.encode(&scanloop_activation::domain::code::CodeId {
        brand_id: "globex".into(),
        key_id: "k1".into(),
        batch_id: batch_id.parse().unwrap(),
        serial: 1,
    });
    let verified = client
        .verify_code(pb::VerifyCodeRequest {
            brand_id: "globex".into(),
            code: crossing.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(verified.authentic, "the signature is globex's own");

    let not_found = format!("batch {batch_id} was never issued");
    let get = client
        .get_warranty(pb::GetWarrantyRequest {
            brand_id: "globex".into(),
            by: Some(pb::get_warranty_request::By::Code(crossing.clone())),
        })
        .await
        .unwrap_err();
    assert_eq!(
        (get.code(), get.message()),
        (Code::NotFound, not_found.as_str())
    );
    let mut activate = activation(&crossing, &request_id());
    activate.brand_id = "globex".into();
    let activated = client.activate_warranty(activate).await.unwrap_err();
    assert_eq!(
        (activated.code(), activated.message()),
        (Code::NotFound, not_found.as_str())
    );
    let void = client
        .void_warranty(pb::VoidWarrantyRequest {
            brand_id: "globex".into(),
            request_id: request_id(),
            code: crossing,
            reason: "returned".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(void.code(), Code::NotFound);
    assert!(
        warranty_events(&env, "globex", &batch_id, 1)
            .await
            .is_empty()
    );

    // acme's warranty is untouched and reachable under acme only.
    let own = eventually_get(&mut client, &codes[0], |w| w.version == 1).await;
    assert_eq!(own.status, pb::WarrantyStatus::Active as i32);
    let by_device = get_by_device(&mut client, "globex", "SN-TENANT-1").await;
    assert_eq!(by_device.unwrap_err().code(), Code::NotFound);
    assert_eq!(warranty_events(&env, BRAND, &batch_id, 1).await.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn codes_verify_with_our_base_url_or_bare_and_not_on_a_foreign_host() {
    let env = fresh_env("prefix").await;
    let service = Service::start(&env).await;
    let mut client = service.client().await;
    let (batch_id, codes) = issue(&mut client, 1).await;
    let printed = codes[0].clone();
    let with_brand = printed
        .strip_prefix("https://w.scanloop.cn/")
        .expect("codes are printed under the configured base URL")
        .to_owned();
    let token = with_brand.strip_prefix("acme/").unwrap().to_owned();
    assert!(token.starts_with("k1."));

    let verify = |code: String| {
        let mut client = client.clone();
        async move {
            client
                .verify_code(pb::VerifyCodeRequest {
                    brand_id: BRAND.into(),
                    code,
                })
                .await
                .unwrap()
                .into_inner()
        }
    };
    for accepted in [
        printed.clone(),
        printed.replace("https://w.scanloop.cn", "HTTPS://W.SCANLOOP.CN"),
        with_brand.clone(),
        token.clone(),
    ] {
        let answer = verify(accepted.clone()).await;
        assert!(answer.authentic, "{accepted}: {}", answer.reason);
        assert_eq!(
            (answer.batch_id.as_str(), answer.serial),
            (batch_id.as_str(), 1)
        );
    }
    for foreign in [
        format!("https://evil.example.com/{with_brand}"),
        format!("http://w.scanloop.cn/{with_brand}"),
    ] {
        let answer = verify(foreign.clone()).await;
        assert!(!answer.authentic, "{foreign}");
        assert!(
            answer.reason.starts_with(
                "code is not one of ours: accepted are https://w.scanloop.cn/<brand>/<key_id>.<token>"
            ),
            "{}",
            answer.reason
        );
    }

    // Commands take the same forms: a bare token activates the code.
    let warranty = client
        .activate_warranty(activation(&token, &request_id()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(warranty.serial, 1);
    assert_eq!(get_by_code(&mut client, &printed).await.batch_id, batch_id);
}
