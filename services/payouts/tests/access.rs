#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Who may call what, on all four services: a matrix generated from each service's access table
//! (every RPC × no token, expired, wrong signature, another brand, each role), first against the
//! gate in front of a handler that counts its calls (a refusal never reaches it, so it writes
//! nothing), then against the real services on the devstack; and the actor every event carries.

mod common;

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::{Buf as _, BufMut as _, Bytes};
use common::*;
use scanloop_service::access::gate::{AccessLayer, Policy, brand_fields};
use scanloop_service::access::limits::LimitSettings;
use scanloop_service::access::settings::KeyRing;
use scanloop_service::access::{AccessTable, Bearer, Grant, Role, Signer};
use scanloop_testkit::serving::{connect_as, server_settings, signer, token};
use tonic::Code;
use tonic::body::Body;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tower::{Layer as _, Service as _, ServiceExt as _};

const TABLES: [(&str, AccessTable); 4] = [
    (
        "scanloop.activation.v1.ActivationService",
        scanloop_activation::access::ACCESS,
    ),
    (
        "scanloop.membership.v1.MembershipService",
        scanloop_membership::access::ACCESS,
    ),
    (
        "scanloop.referral.v1.ReferralService",
        scanloop_referral::access::ACCESS,
    ),
    (
        "scanloop.payouts.v1.PayoutsService",
        scanloop_payouts::access::ACCESS,
    ),
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    Unauthenticated,
    PermissionDenied,
    /// Past the gate: the handler decides (validation, a read, ...).
    Admitted,
}

/// One row of the matrix: who calls, and what the gate must answer.
struct Case {
    name: String,
    token: Option<String>,
    expect: Expect,
}

fn grant(subject: &str, brands: &[&str], roles: &[Role], ttl: Duration) -> Grant {
    Grant {
        subject: subject.into(),
        brands: brands.iter().map(|b| (*b).to_owned()).collect(),
        roles: roles.to_vec(),
        ttl,
    }
}

/// Every case for an RPC that `allowed` roles may call (platform is always allowed).
fn cases(allowed: &[Role]) -> Vec<Case> {
    let right = allowed.first().copied().unwrap_or(Role::Platform);
    let hour = Duration::from_secs(3_600);
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let mut cases = vec![
        Case {
            name: "no token".into(),
            token: None,
            expect: Expect::Unauthenticated,
        },
        Case {
            name: "expired".into(),
            token: Some(
                signer()
                    .issue_at(&grant("late", &[BRAND], &[right], hour), now - 3 * 3_600)
                    .unwrap(),
            ),
            expect: Expect::Unauthenticated,
        },
        Case {
            name: "wrong signature".into(),
            // Same key id as the trusted key, another key: a forgery.
            token: Some(
                Signer::generate(signer().kid())
                    .issue(&grant("forger", &[BRAND], &[Role::Platform], hour))
                    .unwrap(),
            ),
            expect: Expect::Unauthenticated,
        },
        Case {
            name: "garbage".into(),
            token: Some("not.a.jwt".into()),
            expect: Expect::Unauthenticated,
        },
        Case {
            name: "other brand".into(),
            token: Some(token("elsewhere", &["zenith"], &[right, Role::Platform])),
            expect: Expect::PermissionDenied,
        },
    ];
    for role in Role::ALL {
        let admitted = role == Role::Platform || allowed.contains(&role);
        cases.push(Case {
            name: format!("role {role}"),
            token: Some(token(&format!("as-{role}"), &[BRAND], &[role])),
            expect: if admitted {
                Expect::Admitted
            } else {
                Expect::PermissionDenied
            },
        });
    }
    cases.push(Case {
        name: "all brands".into(),
        token: Some(token("platform-ops", &["*"], &[right])),
        expect: Expect::Admitted,
    });
    cases
}

/// A request message with only `brand_id` (field `field`) set, as protobuf bytes.
fn brand_only(field: u32) -> Vec<u8> {
    let mut message = Vec::new();
    prost::encoding::string::encode(field, &BRAND.to_owned(), &mut message);
    message
}

fn expect_of(code: Option<Code>) -> Expect {
    match code {
        Some(Code::Unauthenticated) => Expect::Unauthenticated,
        Some(Code::PermissionDenied) => Expect::PermissionDenied,
        _ => Expect::Admitted,
    }
}

#[tokio::test]
async fn a_refused_call_never_reaches_its_handler() {
    let mut checked = 0;
    for (service, table) in TABLES {
        let reached = Arc::new(AtomicUsize::new(0));
        let counter = reached.clone();
        let handler = tower::service_fn(move |_request: http::Request<Body>| {
            counter.fetch_add(1, Ordering::SeqCst);
            async { Ok::<_, Infallible>(http::Response::new(Body::empty())) }
        });
        let keys = KeyRing::load(&server_settings()).unwrap();
        let policy = Policy::new(service, table, keys, LimitSettings::default(), false).unwrap();
        let mut gate = AccessLayer::new(Arc::new(policy)).layer(handler);
        let fields = brand_fields(service).unwrap();
        for rpc in table {
            for case in cases(rpc.roles) {
                let message = brand_only(fields[rpc.method]);
                let mut frame = vec![0];
                frame.extend_from_slice(&(message.len() as u32).to_be_bytes());
                frame.extend_from_slice(&message);
                let mut request = http::Request::builder()
                    .method("POST")
                    .uri(format!("http://gate.test/{service}/{}", rpc.method))
                    .header("content-type", "application/grpc");
                if let Some(token) = &case.token {
                    request = request.header("authorization", format!("Bearer {token}"));
                }
                let request = request
                    .body(Body::new(http_body_util::Full::new(Bytes::from(frame))))
                    .unwrap();
                let before = reached.load(Ordering::SeqCst);
                let response = gate.ready().await.unwrap().call(request).await.unwrap();
                let status = tonic::Status::from_header_map(response.headers());
                let got = expect_of(status.as_ref().map(tonic::Status::code));
                assert_eq!(
                    got, case.expect,
                    "{service}/{} as {}: {status:?}",
                    rpc.method, case.name
                );
                let reached_handler = reached.load(Ordering::SeqCst) > before;
                assert_eq!(
                    reached_handler,
                    case.expect == Expect::Admitted,
                    "{service}/{} as {}: the handler was reached: {reached_handler}",
                    rpc.method,
                    case.name
                );
                checked += 1;
            }
        }
    }
    // 45 RPCs × 13 cases: the matrix really ran.
    assert_eq!(checked, 45 * 13);
}

/// The roles a brand's set-up is built on, pinned (the generated matrix checks the gate against
/// the tables; this checks the tables say what docs/access.md and docs/payouts.md promise).
#[test]
fn money_moves_only_for_finance_and_plans_only_for_operators() {
    let roles = |service: &str, method: &str| -> Vec<Role> {
        let (_, table) = TABLES.iter().find(|(name, _)| *name == service).unwrap();
        table
            .iter()
            .find(|rpc| rpc.method == method)
            .unwrap()
            .roles
            .to_vec()
    };
    let payouts = "scanloop.payouts.v1.PayoutsService";
    assert_eq!(roles(payouts, "RunSettlement"), vec![Role::Finance]);
    assert_eq!(roles(payouts, "MarkPaid"), vec![Role::Finance]);
    assert_eq!(roles(payouts, "UpsertPlan"), vec![Role::Operator]);
    let referral = "scanloop.referral.v1.ReferralService";
    assert_eq!(roles(referral, "ReviewReferral"), vec![Role::Reviewer]);
    let activation = "scanloop.activation.v1.ActivationService";
    assert_eq!(roles(activation, "IssueBatch"), vec![Role::Operator]);
    assert_eq!(roles(activation, "ActivateWarranty"), vec![Role::Landing]);
    // Auditors read everything and write nothing: every RPC they may call is a read.
    for (_, table) in TABLES {
        for rpc in table
            .iter()
            .filter(|rpc| rpc.roles.contains(&Role::Auditor))
        {
            assert!(
                ["Get", "List", "Check"]
                    .iter()
                    .any(|read| rpc.method.starts_with(read)),
                "auditor may call {}",
                rpc.method
            );
        }
    }
}

/// Raw protobuf bytes in and out: one client for every RPC of every service.
#[derive(Clone, Copy, Default)]
struct RawCodec;

impl Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = RawCodec;
    type Decoder = RawCodec;
    fn encoder(&mut self) -> RawCodec {
        RawCodec
    }
    fn decoder(&mut self) -> RawCodec {
        RawCodec
    }
}

impl Encoder for RawCodec {
    type Item = Vec<u8>;
    type Error = tonic::Status;
    fn encode(&mut self, item: Vec<u8>, dst: &mut EncodeBuf<'_>) -> Result<(), tonic::Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for RawCodec {
    type Item = Vec<u8>;
    type Error = tonic::Status;
    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Vec<u8>>, tonic::Status> {
        Ok(Some(src.copy_to_bytes(src.remaining()).to_vec()))
    }
}

async fn raw_call(
    channel: &tonic::transport::Channel,
    path: &str,
    message: Vec<u8>,
    token: Option<&str>,
) -> Result<Vec<u8>, tonic::Status> {
    let mut grpc = tonic::client::Grpc::new(channel.clone());
    grpc.ready().await.unwrap();
    let mut request = tonic::Request::new(message);
    if let Some(token) = token {
        request
            .metadata_mut()
            .insert("authorization", format!("Bearer {token}").parse().unwrap());
    }
    grpc.unary(request, path.parse().unwrap(), RawCodec)
        .await
        .map(tonic::Response::into_inner)
}

#[tokio::test]
async fn every_rpc_of_every_service_answers_each_caller_as_its_table_says() {
    let world = Loop::start("access").await;
    let mut calls = 0;
    for (service, table) in TABLES {
        let channel = scanloop_testkit::serving::channel(&world.addrs[service])
            .await
            .unwrap();
        let fields = brand_fields(service).unwrap();
        for rpc in table {
            let path = format!("/{service}/{}", rpc.method);
            for case in cases(rpc.roles) {
                let answer = raw_call(
                    &channel,
                    &path,
                    brand_only(fields[rpc.method]),
                    case.token.as_deref(),
                )
                .await;
                let status = answer.as_ref().err();
                assert_eq!(
                    expect_of(status.map(tonic::Status::code)),
                    case.expect,
                    "{path} as {}: {status:?}",
                    case.name
                );
                if let Some(status) = status.filter(|_| case.expect != Expect::Admitted) {
                    assert!(!status.message().is_empty(), "{path}: a refusal says why");
                }
                calls += 1;
            }
        }
    }
    assert_eq!(calls, 45 * 13);

    // Health is open to anyone; reflection is not, outside development mode.
    let channel =
        scanloop_testkit::serving::channel(&world.addrs["scanloop.payouts.v1.PayoutsService"])
            .await
            .unwrap();
    let health = raw_call(&channel, "/grpc.health.v1.Health/Check", Vec::new(), None).await;
    assert!(health.is_ok(), "{health:?}");
    let reflection_request = {
        // ServerReflectionRequest { list_services (field 7) = "" }
        let mut message = Vec::new();
        prost::encoding::string::encode(7, &String::new(), &mut message);
        message
    };
    let mut grpc = tonic::client::Grpc::new(channel.clone());
    grpc.ready().await.unwrap();
    let refused = grpc
        .streaming(
            tonic::Request::new(futures_once(reflection_request)),
            "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo"
                .parse()
                .unwrap(),
            RawCodec,
        )
        .await
        .err()
        .map(|status| status.code());
    assert_eq!(refused, Some(Code::Unauthenticated));
    world.cluster.stop().await;
}

fn futures_once(message: Vec<u8>) -> impl futures::Stream<Item = Vec<u8>> {
    futures::stream::iter([message])
}

/// Waits until `topic` holds an event of `event_type` (the name after the package) and returns
/// the distinct actors of all such events, sorted (partitions keep no order between streams).
async fn actors_of(topic: &str, event_type: &str) -> Vec<String> {
    let suffix = format!(".{event_type}");
    scanloop_testkit::eventually_value(
        || async {
            envelopes_on(topic)
                .await
                .into_iter()
                .filter(|envelope| envelope.event_type.ends_with(&suffix))
                .map(|envelope| envelope.actor)
                .collect::<Vec<_>>()
        },
        |actors| !actors.is_empty(),
    )
    .await
    .into_iter()
    .collect::<std::collections::BTreeSet<_>>()
    .into_iter()
    .collect()
}

async fn as_caller<T>(
    world: &Loop,
    service: &str,
    subject: &str,
    roles: &[Role],
    make: impl Fn(scanloop_testkit::serving::AuthChannel) -> T,
) -> T {
    let bearer = Bearer::new(&token(subject, &[BRAND], roles)).unwrap();
    connect_as(&world.addrs[service], bearer, make)
        .await
        .unwrap()
}

#[tokio::test]
async fn every_event_names_who_caused_it_and_reactions_carry_their_cause() {
    use scanloop_proto::activation::v1::activation_service_client::ActivationServiceClient;
    use scanloop_proto::payouts::v1::payouts_service_client::PayoutsServiceClient;
    let mut world = Loop::start("actors").await;
    let payouts = "scanloop.payouts.v1.PayoutsService";
    let mut operator = as_caller(
        &world,
        payouts,
        "operator-olga",
        &[Role::Operator],
        PayoutsServiceClient::new,
    )
    .await;
    operator
        .upsert_plan(two_level_plan(BRAND, 100))
        .await
        .unwrap();

    let codes = world.issue(BRAND, 2).await;
    world
        .activate(activation(BRAND, &codes[0], "13800000001", "SN-A", ""))
        .await;
    let a = world.member_of(BRAND, "13800000001").await.member_id;
    let link = world.link_for(BRAND, &a, "").await;
    // The friend's activation comes through the landing page's back end.
    world.activation = as_caller(
        &world,
        "scanloop.activation.v1.ActivationService",
        "landing-web",
        &[Role::Landing],
        ActivationServiceClient::new,
    )
    .await;
    world
        .activate(activation(
            BRAND,
            &codes[1],
            "13800000002",
            "SN-B",
            &link.token,
        ))
        .await;
    world.commissions_of(&a, |c| c.len() == 1).await;
    // A batch is started only when something is payable.
    world.advance(chrono::Duration::days(31));
    world.account(&a, |acc| amount(&acc.payable) > 0).await;
    world.payouts = as_caller(
        &world,
        payouts,
        "finance-fay",
        &[Role::Finance],
        PayoutsServiceClient::new,
    )
    .await;
    world.settle("settle-actors").await.unwrap();

    assert_eq!(
        actors_of(&world.payouts_topic, "PlanUpserted").await,
        vec!["operator-olga"]
    );
    assert_eq!(
        actors_of(&world.activation_topic, "BatchIssued").await,
        vec!["test-platform"]
    );
    assert_eq!(
        actors_of(&world.activation_topic, "WarrantyActivated").await,
        vec!["landing-web", "test-platform"]
    );
    // Reactions: caused by the friend's activation, so by its actor, in every service.
    assert_eq!(
        actors_of(&world.membership_topic, "MemberRegistered").await,
        vec!["landing-web", "test-platform"]
    );
    assert_eq!(
        actors_of(&world.referral_topic, "ReferralAttributed").await,
        vec!["landing-web"]
    );
    assert_eq!(
        actors_of(&world.payouts_topic, "CommissionAccrued").await,
        vec!["landing-web"]
    );
    assert_eq!(
        actors_of(&world.payouts_topic, "SettlementStarted").await,
        vec!["finance-fay"]
    );
    world.cluster.stop().await;
}
