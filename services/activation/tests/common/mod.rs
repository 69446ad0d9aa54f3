//! Starts the real activation binary against the devstack, each test with its own keyspace,
//! topic and consumer group, and talks to it over gRPC.

#![allow(dead_code)]

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use scanloop_proto::activation::v1 as pb;
use scanloop_proto::activation::v1::activation_service_client::ActivationServiceClient;
use scanloop_proto::common::v1::Money;
use scanloop_proto::time::to_timestamp;
pub use scanloop_testkit::requests::{phone, request_id};
use scanloop_testkit::serving::AuthChannel;

pub const BRAND: &str = "acme";

pub struct Env {
    pub keyspace: String,
    pub topic: String,
    pub group: String,
    /// The referral topic the service reacts to (assist completions), and its group there.
    pub referral_topic: String,
    pub reaction_group: String,
}

/// A fresh keyspace (migrated as `scanloop migrate` would) and topics.
pub async fn fresh_env(name: &str) -> Env {
    let session = scanloop_testkit::session().await.unwrap();
    let keyspace = scanloop_testkit::unique_name(&format!("test_act_{name}"));
    scanloop_storage::migrate(
        &session,
        &keyspace,
        1,
        "",
        &scanloop_activation::migrations(),
    )
    .await
    .unwrap();
    let topic = scanloop_testkit::fresh_topic(&format!("activation.{name}"), 3)
        .await
        .unwrap();
    let referral_topic = scanloop_testkit::fresh_topic(&format!("referral.{name}"), 3)
        .await
        .unwrap();
    Env {
        group: format!("{keyspace}-projections"),
        reaction_group: format!("{keyspace}-reactions"),
        keyspace,
        topic,
        referral_topic,
    }
}

pub struct Service {
    pub child: Child,
    pub addr: String,
}

impl Service {
    /// Starts the binary and waits until it answers.
    pub async fn start(env: &Env) -> Service {
        Self::start_with(env, &[]).await
    }

    /// Starts the binary with extra environment variables.
    pub async fn start_with(env: &Env, extra: &[(&str, &str)]) -> Service {
        let port = free_port();
        let addr = format!("127.0.0.1:{port}");
        let child = spawn(env, &addr, extra);
        let service = Service { child, addr };
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(mut client) = service.try_client().await {
                let probe = client
                    .verify_code(pb::VerifyCodeRequest {
                        brand_id: BRAND.into(),
                        code: "acme/k1.AAAA".into(),
                    })
                    .await;
                if probe.is_ok() {
                    return service;
                }
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "service did not come up"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn try_client(
        &self,
    ) -> Result<ActivationServiceClient<AuthChannel>, tonic::transport::Error> {
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", self.addr))?
            .connect()
            .await?;
        Ok(ActivationServiceClient::new(
            scanloop_service::access::authorized(
                channel,
                scanloop_testkit::serving::platform_bearer(),
            ),
        ))
    }

    pub async fn client(&self) -> ActivationServiceClient<AuthChannel> {
        self.try_client().await.expect("connect")
    }

    /// SIGKILL: no graceful anything, as a crashed or OOM-killed pod.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The activation binary set up for `env` on `addr`: its keyspace, topics and groups, the
/// devstack, test secrets and the test token key; abuse limits out of the way.
pub fn command(env: &Env, addr: &str) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_scanloop-activation"));
    command
        .env("SCANLOOP_GRPC_ADDR", addr)
        .env("SCANLOOP_ACTIVATION_KEYSPACE", &env.keyspace)
        .env("SCANLOOP_ACTIVATION_TOPIC", &env.topic)
        .env("SCANLOOP_PROJECTION_GROUP", &env.group)
        .env("SCANLOOP_REFERRAL_TOPIC", &env.referral_topic)
        .env("SCANLOOP_REACTION_GROUP", &env.reaction_group)
        .env(
            "SCANLOOP_CQL_NODES",
            scanloop_testkit::cql_nodes().join(","),
        )
        .env("SCANLOOP_KAFKA_BROKERS", scanloop_testkit::brokers())
        .env("SCANLOOP_CODE_SECRET", "test-code-secret")
        .env("SCANLOOP_IDENTITY_SECRET", "test-identity-secret")
        .env("SCANLOOP_AUTH_JWKS", scanloop_testkit::serving::jwks_file())
        .env("SCANLOOP_RATE_LIMIT_PER_CLIENT", "1000000")
        .env("SCANLOOP_RATE_LIMIT_PER_BRAND", "1000000");
    command
}

/// Runs the activation binary for `env` on `addr`, with `extra` environment on top.
pub fn spawn(env: &Env, addr: &str, extra: &[(&str, &str)]) -> Child {
    command(env, addr)
        .env(
            "RUST_LOG",
            std::env::var("TEST_SERVICE_LOG").unwrap_or_else(|_| "warn".into()),
        )
        .envs(extra.iter().copied())
        .stdout(Stdio::null())
        .spawn()
        .expect("the activation binary starts")
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Issues a batch and collects its codes.
pub async fn issue(
    client: &mut ActivationServiceClient<AuthChannel>,
    quantity: u32,
) -> (String, Vec<String>) {
    issue_for(client, BRAND, quantity).await
}

/// Issues a batch of `brand_id` and collects its codes.
pub async fn issue_for(
    client: &mut ActivationServiceClient<AuthChannel>,
    brand_id: &str,
    quantity: u32,
) -> (String, Vec<String>) {
    let request = pb::IssueBatchRequest {
        brand_id: brand_id.into(),
        request_id: request_id(),
        sku: "AC-100".into(),
        product_model: "Air Conditioner 100".into(),
        warranty_months: 24,
        quantity,
        key_id: "k1".into(),
    };
    scanloop_testkit::requests::issue(client, request).await
}

pub fn activation(code: &str, request_id: &str) -> pb::ActivateWarrantyRequest {
    pb::ActivateWarrantyRequest {
        brand_id: BRAND.into(),
        request_id: request_id.into(),
        code: code.into(),
        buyer: phone("13800138000"),
        channel: Some(pb::PurchaseChannel {
            kind: pb::PurchaseChannelKind::Store as i32,
            id: "store-sz-01".into(),
        }),
        purchase_amount: Some(Money {
            amount_fen: 399_900,
            currency: "CNY".into(),
        }),
        // Bought this morning: after the batch was issued (a test issues it just before).
        purchased_at: Some(to_timestamp(
            chrono::Utc::now() - chrono::Duration::hours(3),
        )),
        referral_token: String::new(),
        device_serial: String::new(),
    }
}
