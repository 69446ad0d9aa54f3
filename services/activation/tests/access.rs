#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failed unwrap is a failed test
//! The activation binary's front door: abuse limits on the public RPCs, token keys rotated
//! without a restart, and TLS with client certificates (certificates made in the test).

mod common;

use std::time::Duration;

use common::{BRAND, Service, fresh_env, spawn};
use scanloop_proto::activation::v1 as pb;
use scanloop_proto::activation::v1::activation_service_client::ActivationServiceClient;
use scanloop_service::access::credentials::jwks_document;
use scanloop_service::access::{Bearer, Grant, Role, Signer, authorized};
use scanloop_testkit::serving::{AuthChannel, signer};
use tonic::Code;
use tonic_types::StatusExt as _;

fn verify(client_id: &str) -> tonic::Request<pb::VerifyCodeRequest> {
    let mut request = tonic::Request::new(pb::VerifyCodeRequest {
        brand_id: BRAND.into(),
        code: "acme/k1.AAAA".into(),
    });
    request
        .metadata_mut()
        .insert("x-scanloop-client", client_id.parse().unwrap());
    request
}

async fn client_of(addr: &str, bearer: Bearer) -> ActivationServiceClient<AuthChannel> {
    scanloop_testkit::serving::connect_as(addr, bearer, ActivationServiceClient::new)
        .await
        .unwrap()
}

#[tokio::test]
async fn a_client_over_its_limit_is_told_to_retry_later_and_others_are_not() {
    let env = fresh_env("rate_limit").await;
    let service = Service::start_with(&env, &[("SCANLOOP_RATE_LIMIT_PER_CLIENT", "2")]).await;
    let mut client = service.client().await;

    // A burst of two per client; then refusals until the budget refills (one per 500 ms).
    for _ in 0..2 {
        client.verify_code(verify("buyer-1")).await.unwrap();
    }
    let mut refused = None;
    for _ in 0..20 {
        if let Err(status) = client.verify_code(verify("buyer-1")).await {
            refused = Some(status);
            break;
        }
    }
    let refused = refused.expect("twenty calls in a row stayed within 2 calls/s");
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
    assert!(
        refused.message().contains("over its limit of 2 calls/s"),
        "{}",
        refused.message()
    );
    let hint = refused
        .get_details_retry_info()
        .and_then(|info| info.retry_delay)
        .expect("a RetryInfo detail");
    assert!(
        hint > Duration::ZERO && hint <= Duration::from_millis(500),
        "{hint:?}"
    );

    // Another buyer has a budget of their own; a call that is not public is not limited.
    client.verify_code(verify("buyer-2")).await.unwrap();
    let mut read = tonic::Request::new(pb::ListWarrantiesRequest {
        brand_id: BRAND.into(),
        ..Default::default()
    });
    read.metadata_mut()
        .insert("x-scanloop-client", "buyer-1".parse().unwrap());
    let listed = client.list_warranties(read).await;
    assert!(
        listed
            .as_ref()
            .err()
            .is_none_or(|status| status.code() != Code::ResourceExhausted),
        "{listed:?}"
    );
    // After the hint, buyer 1 is served again.
    tokio::time::sleep(hint).await;
    assert!(
        scanloop_testkit::eventually(Duration::from_secs(10), || {
            let mut client = client.clone();
            async move { client.verify_code(verify("buyer-1")).await.is_ok() }
        })
        .await
    );
}

fn landing_token(signer: &Signer) -> String {
    signer
        .issue(&Grant {
            subject: format!("landing-{}", signer.kid()),
            brands: vec![BRAND.into()],
            roles: vec![Role::Landing],
            ttl: Duration::from_secs(600),
        })
        .unwrap()
}

#[tokio::test]
async fn a_rotated_key_set_is_taken_without_a_restart() {
    let env = fresh_env("rotation").await;
    let old = Signer::generate("2026-11");
    let new = Signer::generate("2026-12");
    let jwks = std::env::temp_dir().join(format!("{}-jwks.json", env.keyspace));
    // The test key stays in the set: the harness's readiness probe signs with it.
    let write = |keys: &[&Signer]| {
        let mut public: Vec<_> = keys.iter().map(|k| k.public_jwk()).collect();
        public.push(signer().public_jwk());
        std::fs::write(&jwks, jwks_document(&public)).unwrap();
    };
    write(&[&old, &new]);
    let service = Service::start_with(
        &env,
        &[
            ("SCANLOOP_AUTH_JWKS", jwks.to_str().unwrap()),
            ("SCANLOOP_AUTH_JWKS_RELOAD_MS", "100"),
        ],
    )
    .await;
    let mut with_old = client_of(&service.addr, Bearer::new(&landing_token(&old)).unwrap()).await;
    let mut with_new = client_of(&service.addr, Bearer::new(&landing_token(&new)).unwrap()).await;

    // Overlap: both keys sign valid tokens.
    with_old.verify_code(verify("a")).await.unwrap();
    with_new.verify_code(verify("a")).await.unwrap();

    // The old key is removed from the set: its tokens stop working, the new ones do not.
    write(&[&new]);
    assert!(
        scanloop_testkit::eventually(Duration::from_secs(30), || {
            let mut with_old = with_old.clone();
            async move {
                with_old
                    .verify_code(verify("a"))
                    .await
                    .is_err_and(|status| status.code() == Code::Unauthenticated)
            }
        })
        .await,
        "tokens of the removed key are still accepted"
    );
    let refused = with_old.verify_code(verify("a")).await.unwrap_err();
    assert!(
        refused.message().contains("\"2026-11\""),
        "{}",
        refused.message()
    );
    with_new.verify_code(verify("a")).await.unwrap();
    let _ = std::fs::remove_file(&jwks);
}

/// What a VerifyCode over `connected` answers; None when the connection itself failed.
async fn answer(
    connected: Result<tonic::transport::Channel, tonic::transport::Error>,
    bearer: &Bearer,
) -> Option<Result<tonic::Response<pb::VerifyCodeResponse>, tonic::Status>> {
    let channel = connected.ok()?;
    Some(
        ActivationServiceClient::new(authorized(channel, bearer.clone()))
            .verify_code(verify("tls"))
            .await,
    )
}

struct Pki {
    ca: String,
    server_cert: String,
    server_key: String,
    client_cert: String,
    client_key: String,
}

/// A CA, a server certificate for localhost and a client certificate, all signed by the CA.
fn pki() -> Pki {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let server_key = KeyPair::generate().unwrap();
    let server_cert = CertificateParams::new(vec!["localhost".to_owned()])
        .unwrap()
        .signed_by(&server_key, &issuer)
        .unwrap();
    let client_key = KeyPair::generate().unwrap();
    let client_cert = CertificateParams::new(vec!["referral.scanloop.internal".to_owned()])
        .unwrap()
        .signed_by(&client_key, &issuer)
        .unwrap();
    Pki {
        ca: ca_cert.pem(),
        server_cert: server_cert.pem(),
        server_key: server_key.serialize_pem(),
        client_cert: client_cert.pem(),
        client_key: client_key.serialize_pem(),
    }
}

#[tokio::test]
async fn over_tls_only_clients_with_a_certificate_from_the_ca_get_in() {
    use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};
    let env = fresh_env("tls").await;
    let pki = pki();
    let dir = std::env::temp_dir().join(format!("{}-tls", env.keyspace));
    std::fs::create_dir_all(&dir).unwrap();
    let file = |name: &str, content: &str| {
        let path = dir.join(name);
        std::fs::write(&path, content).unwrap();
        path.to_str().unwrap().to_owned()
    };
    let (cert, key, ca) = (
        file("server.crt", &pki.server_cert),
        file("server.key", &pki.server_key),
        file("ca.crt", &pki.ca),
    );
    let port = common::free_port();
    let health_port = common::free_port();
    let addr = format!("127.0.0.1:{port}");
    let health_addr = format!("127.0.0.1:{health_port}");
    let mut child = spawn(
        &env,
        &addr,
        &[
            ("SCANLOOP_TLS_CERT", &cert),
            ("SCANLOOP_TLS_KEY", &key),
            ("SCANLOOP_TLS_CLIENT_CA", &ca),
            ("SCANLOOP_HEALTH_ADDR", &health_addr),
        ],
    );
    let bearer = scanloop_testkit::serving::platform_bearer();
    let tls = |with_identity: bool| {
        let config = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(&pki.ca))
            .domain_name("localhost");
        if with_identity {
            config.identity(Identity::from_pem(&pki.client_cert, &pki.client_key))
        } else {
            config
        }
    };
    let endpoint = |with_identity: bool| {
        Endpoint::from_shared(format!("https://localhost:{port}"))
            .unwrap()
            .tls_config(tls(with_identity))
            .unwrap()
    };

    // With the client certificate: served, once the service is up.
    let connected = scanloop_testkit::eventually_value(
        || async {
            let channel = endpoint(true).connect().await.ok()?;
            let mut client = ActivationServiceClient::new(authorized(channel, bearer.clone()));
            client.verify_code(verify("tls")).await.ok().map(|_| client)
        },
        Option::is_some,
    )
    .await;
    assert!(connected.is_some(), "never served over TLS");

    // Without one the handshake fails; nor does plaintext reach the TLS port.
    let anonymous = answer(endpoint(false).connect().await, &bearer).await;
    assert!(
        anonymous.as_ref().is_none_or(|answer| answer.is_err()),
        "served a client without a certificate: {anonymous:?}"
    );
    let plaintext = answer(
        Endpoint::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect()
            .await,
        &bearer,
    )
    .await;
    assert!(
        plaintext.as_ref().is_none_or(|answer| answer.is_err()),
        "served plaintext on the TLS port: {plaintext:?}"
    );

    // The probes' port: health in plaintext, and nothing else.
    let health = Endpoint::from_shared(format!("http://{health_addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let status = tonic_health::pb::health_client::HealthClient::new(health.clone())
        .check(tonic_health::pb::HealthCheckRequest {
            service: "liveness".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .status();
    assert_eq!(
        status,
        tonic_health::pb::health_check_response::ServingStatus::Serving
    );
    let other = ActivationServiceClient::new(authorized(health, bearer))
        .verify_code(verify("tls"))
        .await
        .unwrap_err();
    assert_eq!(other.code(), Code::Unimplemented, "{other:?}");
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&dir);
}
