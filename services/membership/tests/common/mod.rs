//! Runs the activation and membership services in-process against the devstack, each test with
//! its own keyspaces, topics and consumer groups, and talks to them over gRPC.

#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use scanloop_config::Secret;
use scanloop_proto::activation::v1 as act;
use scanloop_proto::activation::v1::activation_service_client::ActivationServiceClient;
use scanloop_proto::common::v1::Money;
use scanloop_proto::membership::v1::membership_service_client::MembershipServiceClient;
use scanloop_proto::time::to_timestamp;
// Not every test file names a buyer by unionid.
#[allow(unused_imports)]
pub use scanloop_testkit::requests::{phone, request_id, unionid};
use scanloop_testkit::serving::AuthChannel;
use scanloop_timers::ShiftedClock;
use tokio_util::sync::CancellationToken;

pub const BRAND: &str = "acme";
const IDENTITY_SECRET: &str = "test-identity-secret";

pub struct Cluster {
    pub activation_keyspace: String,
    pub membership_keyspace: String,
    pub activation_topic: String,
    pub membership_topic: String,
    /// Where the test publishes referral events (both services react to them).
    pub referral_topic: String,
    pub activation: ActivationServiceClient<AuthChannel>,
    pub membership: MembershipServiceClient<AuthChannel>,
    /// The membership instances' clock: a test moves it forward to let time pass.
    pub clock: Arc<ShiftedClock>,
    /// How often the membership instances' timer jobs run.
    pub timer_interval: Duration,
    shutdown: CancellationToken,
    tasks: Vec<tokio::task::JoinHandle<anyhow::Result<()>>>,
    membership_addr: String,
}

async fn listener() -> (tokio::net::TcpListener, String) {
    scanloop_testkit::serving::listener().await.unwrap()
}

async fn connect<T>(addr: &str, make: impl Fn(AuthChannel) -> T) -> T {
    scanloop_testkit::serving::connect(addr, make)
        .await
        .unwrap()
}

impl Cluster {
    pub async fn start(name: &str) -> Cluster {
        Self::start_with_timer_interval(name, Duration::from_millis(200)).await
    }

    /// A cluster whose membership timer jobs run every `timer_interval` (a long one leaves due
    /// reviews to the test's own runners).
    pub async fn start_with_timer_interval(name: &str, timer_interval: Duration) -> Cluster {
        let session = scanloop_testkit::session().await.unwrap();
        let activation_keyspace = scanloop_testkit::unique_name(&format!("test_ma_{name}"));
        let membership_keyspace = scanloop_testkit::unique_name(&format!("test_mm_{name}"));
        scanloop_storage::migrate(
            &session,
            &activation_keyspace,
            1,
            "",
            &scanloop_activation::migrations(),
        )
        .await
        .unwrap();
        scanloop_storage::migrate(
            &session,
            &membership_keyspace,
            1,
            "",
            &scanloop_membership::migrations(),
        )
        .await
        .unwrap();
        let activation_topic = scanloop_testkit::fresh_topic(&format!("{name}.activation"), 3)
            .await
            .unwrap();
        let membership_topic = scanloop_testkit::fresh_topic(&format!("{name}.membership"), 3)
            .await
            .unwrap();
        let referral_topic = scanloop_testkit::fresh_topic(&format!("{name}.referral"), 3)
            .await
            .unwrap();
        let shutdown = CancellationToken::new();

        let (act_listener, act_addr) = listener().await;
        let activation_config = scanloop_activation::config::Config {
            service: scanloop_service::ServiceConfig {
                infra: scanloop_testkit::serving::infra(),
                server: scanloop_testkit::serving::server_settings(),
                grpc_addr: act_addr.clone(),
                keyspace: activation_keyspace.clone(),
                identity_secret: Secret::new(IDENTITY_SECRET.into()),
                projection_group: format!("{activation_keyspace}-projections"),
                topic: activation_topic.clone(),
                reaction_group: format!("{activation_keyspace}-reactions"),
            },
            code_secret: Secret::new("test-code-secret".into()),
            code_base_url: "https://w.example.cn".into(),
            return_window_days: 30,
            suspicious_scan_minutes: 360,
            purchase_max_age_days: 1826,
            purchase_max_fen: 100_000_000,
            purchase_max_fen_by_brand: Default::default(),
            referral_topic: referral_topic.clone(),
        };
        let mut tasks = vec![tokio::spawn(scanloop_activation::server::run(
            activation_config,
            act_listener,
            shutdown.clone(),
        ))];

        let mut cluster = Cluster {
            activation: connect(&act_addr, ActivationServiceClient::new).await,
            // Replaced by start_membership below; a client needs some channel meanwhile.
            membership: connect(&act_addr, MembershipServiceClient::new).await,
            activation_keyspace,
            membership_keyspace,
            activation_topic,
            membership_topic,
            referral_topic,
            clock: ShiftedClock::new(),
            timer_interval,
            shutdown,
            tasks: Vec::new(),
            membership_addr: String::new(),
        };
        cluster.tasks.append(&mut tasks);
        cluster.start_membership("membership-reactions").await;
        cluster
    }

    /// Starts (another) membership instance; `reaction_group` names its activation consumer group.
    pub async fn start_membership(&mut self, reaction_group: &str) {
        let (listener, addr) = listener().await;
        let config = scanloop_membership::config::Config {
            service: scanloop_service::ServiceConfig {
                infra: scanloop_testkit::serving::infra(),
                server: scanloop_testkit::serving::server_settings(),
                grpc_addr: addr.clone(),
                keyspace: self.membership_keyspace.clone(),
                topic: self.membership_topic.clone(),
                identity_secret: Secret::new(IDENTITY_SECRET.into()),
                projection_group: format!("{}-projections", self.membership_keyspace),
                reaction_group: format!("{}-{reaction_group}", self.membership_keyspace),
            },
            activation_topic: self.activation_topic.clone(),
            referral_topic: self.referral_topic.clone(),
            timer_group: format!("{}-timers", self.membership_keyspace),
            timer_interval: self.timer_interval,
            rules: scanloop_membership::domain::member::Rules::default(),
            clock: self.clock.clone(),
        };
        self.tasks
            .push(tokio::spawn(scanloop_membership::server::run(
                config,
                listener,
                self.shutdown.clone(),
            )));
        self.membership = connect(&addr, MembershipServiceClient::new).await;
        self.membership_addr = addr;
    }

    /// The activation consumer group of the instance started with `reaction_group`.
    pub fn reaction_group(&self, reaction_group: &str) -> String {
        format!("{}-{reaction_group}", self.membership_keyspace)
    }

    pub async fn stop(self) {
        self.shutdown.cancel();
        for task in self.tasks {
            task.await.unwrap().unwrap();
        }
    }
}

pub async fn issue(
    client: &mut ActivationServiceClient<AuthChannel>,
    quantity: u32,
) -> Vec<String> {
    scanloop_testkit::requests::issue(client, phone_batch(BRAND, quantity))
        .await
        .1
}

/// A batch of phones (12 months' warranty) of `brand`.
pub fn phone_batch(brand: &str, quantity: u32) -> act::IssueBatchRequest {
    act::IssueBatchRequest {
        brand_id: brand.into(),
        request_id: request_id(),
        sku: "PH-9".into(),
        product_model: "Phone 9".into(),
        warranty_months: 12,
        quantity,
        key_id: "k1".into(),
    }
}

pub fn activation(code: &str, buyer: &str, device_serial: &str) -> act::ActivateWarrantyRequest {
    act::ActivateWarrantyRequest {
        brand_id: BRAND.into(),
        request_id: request_id(),
        code: code.into(),
        buyer: phone(buyer),
        channel: Some(act::PurchaseChannel {
            kind: act::PurchaseChannelKind::Online as i32,
            id: "jd".into(),
        }),
        purchase_amount: Some(Money {
            amount_fen: 599_900,
            currency: "CNY".into(),
        }),
        purchased_at: Some(to_timestamp(
            chrono::Utc::now() - chrono::Duration::hours(3),
        )),
        referral_token: String::new(),
        device_serial: device_serial.into(),
    }
}

// Not every test file waits for a consumer.
#[allow(unused_imports)]
pub use scanloop_testkit::consumed_to_end;

// Not every test file polls.
#[allow(unused_imports)]
pub use scanloop_testkit::eventually_value as eventually;
