//! Runs activation, membership and referral in-process against the devstack, each test with its
//! own keyspaces, topics and consumer groups, and talks to them over gRPC.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use scanloop_bus::EventEnvelope;
use scanloop_config::Secret;
use scanloop_proto::activation::v1 as act;
use scanloop_proto::activation::v1::activation_service_client::ActivationServiceClient;
use scanloop_proto::common::v1::Money;
use scanloop_proto::membership::v1 as mem;
use scanloop_proto::membership::v1::membership_service_client::MembershipServiceClient;
use scanloop_proto::referral::v1 as pb;
use scanloop_proto::referral::v1::referral_service_client::ReferralServiceClient;
use scanloop_proto::time::to_timestamp;
use scanloop_referral::domain::rules::Rules;
pub use scanloop_testkit::requests::{phone, request_id};
use scanloop_testkit::serving::AuthChannel;
use scanloop_timers::ShiftedClock;
use tokio_util::sync::CancellationToken;

pub const BRAND: &str = "acme";
const IDENTITY_SECRET: &str = "test-identity-secret";

pub struct Cluster {
    pub keyspaces: [String; 3],
    pub activation_topic: String,
    pub membership_topic: String,
    pub referral_topic: String,
    pub activation: ActivationServiceClient<AuthChannel>,
    pub membership: MembershipServiceClient<AuthChannel>,
    pub referral: ReferralServiceClient<AuthChannel>,
    /// The referral instances' clock: a test moves it forward to let time pass.
    pub clock: Arc<ShiftedClock>,
    pub rules: Rules,
    /// Stops every service of the cluster (and of a harness that adds services to it).
    pub shutdown: CancellationToken,
    pub tasks: Vec<tokio::task::JoinHandle<anyhow::Result<()>>>,
    /// Each service's address by its protobuf name (the latest instance's).
    pub addrs: BTreeMap<&'static str, String>,
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
        Self::start_with(name, Rules::default()).await
    }

    pub async fn start_with(name: &str, rules: Rules) -> Cluster {
        let session = scanloop_testkit::session().await.unwrap();
        let keyspaces = [
            scanloop_testkit::unique_name(&format!("test_ra_{name}")),
            scanloop_testkit::unique_name(&format!("test_rm_{name}")),
            scanloop_testkit::unique_name(&format!("test_rr_{name}")),
        ];
        for (keyspace, migrations) in keyspaces.iter().zip([
            scanloop_activation::migrations(),
            scanloop_membership::migrations(),
            scanloop_referral::migrations(),
        ]) {
            scanloop_storage::migrate(&session, keyspace, 1, "", &migrations)
                .await
                .unwrap();
        }
        let topic = |service: &str| {
            let prefix = format!("{name}.{service}");
            async move { scanloop_testkit::fresh_topic(&prefix, 3).await.unwrap() }
        };
        let activation_topic = topic("activation").await;
        let membership_topic = topic("membership").await;
        let referral_topic = topic("referral").await;
        let shutdown = CancellationToken::new();
        let [act_ks, mem_ks, _] = &keyspaces;

        let (act_listener, act_addr) = listener().await;
        let activation_config = scanloop_activation::config::Config {
            service: scanloop_service::ServiceConfig {
                infra: scanloop_testkit::serving::infra(),
                server: scanloop_testkit::serving::server_settings(),
                grpc_addr: act_addr.clone(),
                keyspace: act_ks.clone(),
                identity_secret: Secret::new(IDENTITY_SECRET.into()),
                projection_group: format!("{act_ks}-projections"),
                reaction_group: format!("{act_ks}-reactions"),
                topic: activation_topic.clone(),
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
        let (mem_listener, mem_addr) = listener().await;
        let membership_config = scanloop_membership::config::Config {
            service: scanloop_service::ServiceConfig {
                infra: scanloop_testkit::serving::infra(),
                server: scanloop_testkit::serving::server_settings(),
                grpc_addr: mem_addr.clone(),
                keyspace: mem_ks.clone(),
                topic: membership_topic.clone(),
                identity_secret: Secret::new(IDENTITY_SECRET.into()),
                projection_group: format!("{mem_ks}-projections"),
                reaction_group: format!("{mem_ks}-reactions"),
            },
            activation_topic: activation_topic.clone(),
            referral_topic: referral_topic.clone(),
            timer_group: format!("{mem_ks}-timers"),
            timer_interval: Duration::from_millis(500),
            rules: scanloop_membership::domain::member::Rules::default(),
            clock: scanloop_timers::clock::system(),
        };
        let tasks = vec![
            tokio::spawn(scanloop_activation::server::run(
                activation_config,
                act_listener,
                shutdown.clone(),
            )),
            tokio::spawn(scanloop_membership::server::run(
                membership_config,
                mem_listener,
                shutdown.clone(),
            )),
        ];
        let clock = ShiftedClock::new();
        let mut cluster = Cluster {
            activation: connect(&act_addr, ActivationServiceClient::new).await,
            membership: connect(&mem_addr, MembershipServiceClient::new).await,
            // Replaced by start_referral below; a client needs some channel meanwhile.
            referral: connect(&act_addr, ReferralServiceClient::new).await,
            keyspaces,
            activation_topic,
            membership_topic,
            referral_topic,
            clock,
            rules,
            shutdown,
            tasks,
            addrs: BTreeMap::from([
                ("scanloop.activation.v1.ActivationService", act_addr.clone()),
                ("scanloop.membership.v1.MembershipService", mem_addr.clone()),
            ]),
        };
        cluster.start_referral("reactions").await;
        cluster
    }

    /// Starts (another) referral instance; `reaction_group` names its consumer group of
    /// activation and membership events.
    pub async fn start_referral(&mut self, reaction_group: &str) {
        let (listener, addr) = listener().await;
        let keyspace = self.keyspaces[2].clone();
        let config = scanloop_referral::config::Config {
            service: scanloop_service::ServiceConfig {
                infra: scanloop_testkit::serving::infra(),
                server: scanloop_testkit::serving::server_settings(),
                grpc_addr: addr.clone(),
                keyspace: keyspace.clone(),
                topic: self.referral_topic.clone(),
                identity_secret: Secret::new(IDENTITY_SECRET.into()),
                projection_group: format!("{keyspace}-projections"),
                reaction_group: self.reaction_group(reaction_group),
            },
            activation_topic: self.activation_topic.clone(),
            membership_topic: self.membership_topic.clone(),
            share_base_url: "https://s.example.cn".into(),
            rules: self.rules.clone(),
            clock: self.clock.clone(),
        };
        self.tasks.push(tokio::spawn(scanloop_referral::server::run(
            config,
            listener,
            self.shutdown.clone(),
        )));
        self.referral = connect(&addr, ReferralServiceClient::new).await;
        self.addrs
            .insert("scanloop.referral.v1.ReferralService", addr);
    }

    pub fn reaction_group(&self, reaction_group: &str) -> String {
        format!("{}-{reaction_group}", self.keyspaces[2])
    }

    /// The consumer group of referral's projections (every referral instance shares it).
    pub fn projection_group(&self) -> String {
        format!("{}-projections", self.keyspaces[2])
    }

    /// Activation's reaction group: it reads the referral topic (AssistCompleted).
    pub fn activation_reaction_group(&self) -> String {
        format!("{}-reactions", self.keyspaces[0])
    }

    /// Activation's projection group: it keeps GetWarranty's read model.
    pub fn activation_projection_group(&self) -> String {
        format!("{}-projections", self.keyspaces[0])
    }

    /// The warranty of `code` as activation's read model shows it.
    pub async fn warranty(&self, brand: &str, code: &str) -> act::Warranty {
        self.activation
            .clone()
            .get_warranty(act::GetWarrantyRequest {
                brand_id: brand.into(),
                by: Some(act::get_warranty_request::By::Code(code.into())),
            })
            .await
            .unwrap()
            .into_inner()
    }

    /// Stops the services and drops the test's keyspaces: each costs the shared Cassandra
    /// heap, and a run of every test would otherwise leave hundreds behind.
    pub async fn stop(self) {
        self.shutdown.cancel();
        for task in self.tasks {
            task.await.unwrap().unwrap();
        }
        let session = scanloop_testkit::session().await.unwrap();
        let keyspaces: Vec<&str> = self.keyspaces.iter().map(String::as_str).collect();
        scanloop_testkit::drop_keyspaces(&session, &keyspaces).await;
    }

    pub async fn issue(&mut self, brand: &str, quantity: u32) -> Vec<String> {
        let request = act::IssueBatchRequest {
            brand_id: brand.into(),
            request_id: request_id(),
            sku: "PH-9".into(),
            product_model: "Phone 9".into(),
            warranty_months: 12,
            quantity,
            key_id: "k1".into(),
        };
        scanloop_testkit::requests::issue(&mut self.activation, request)
            .await
            .1
    }

    /// Activates `code` for the buyer with this phone number; returns the warranty.
    pub async fn activate(&mut self, request: act::ActivateWarrantyRequest) -> act::Warranty {
        self.activation
            .activate_warranty(request)
            .await
            .unwrap()
            .into_inner()
    }

    /// The member of the buyer with this phone number, once membership has them.
    pub async fn member_of(&mut self, brand: &str, buyer_phone: &str) -> mem::Member {
        let mut client = self.membership.clone();
        scanloop_testkit::eventually_value(
            || {
                let mut client = client.clone();
                async move {
                    client
                        .get_member(mem::GetMemberRequest {
                            brand_id: brand.into(),
                            by: phone(buyer_phone).map(mem::get_member_request::By::Identity),
                        })
                        .await
                }
            },
            Result::is_ok,
        )
        .await
        .unwrap()
        .into_inner();
        client
            .get_member(mem::GetMemberRequest {
                brand_id: brand.into(),
                by: phone(buyer_phone).map(mem::get_member_request::By::Identity),
            })
            .await
            .unwrap()
            .into_inner()
    }

    /// Creates a link for `member_id`, retrying while referral has not heard of the member yet.
    pub async fn link_for(
        &mut self,
        brand: &str,
        member_id: &str,
        campaign: &str,
    ) -> pb::ReferralLink {
        let request = pb::CreateLinkRequest {
            brand_id: brand.into(),
            request_id: request_id(),
            member_id: member_id.into(),
            sku: "PH-9".into(),
            campaign_id: campaign.into(),
        };
        let client = self.referral.clone();
        scanloop_testkit::eventually_value(
            || {
                let mut client = client.clone();
                let request = request.clone();
                async move { client.create_link(request).await.map(|r| r.into_inner()) }
            },
            Result::is_ok,
        )
        .await
        .unwrap()
    }

    /// The referrals listed under `referrer`, once `check` holds for them.
    pub async fn referrals_of(
        &self,
        brand: &str,
        referrer: &str,
        check: impl Fn(&[pb::Referral]) -> bool,
    ) -> Vec<pb::Referral> {
        let client = self.referral.clone();
        scanloop_testkit::eventually_value(
            || {
                let mut client = client.clone();
                async move {
                    client
                        .list_referrals(pb::ListReferralsRequest {
                            brand_id: brand.into(),
                            referrer_member_id: referrer.into(),
                            page: Some(scanloop_proto::common::v1::PageRequest {
                                page_size: 500,
                                page_token: String::new(),
                            }),
                        })
                        .await
                        .unwrap()
                        .into_inner()
                        .referrals
                }
            },
            |referrals| check(referrals),
        )
        .await
    }

    pub async fn tree(
        &self,
        brand: &str,
        member: &str,
        check: impl Fn(&pb::ReferralTree) -> bool,
    ) -> pb::ReferralTree {
        let client = self.referral.clone();
        scanloop_testkit::eventually_value(
            || {
                let mut client = client.clone();
                async move {
                    client
                        .get_tree(pb::GetTreeRequest {
                            brand_id: brand.into(),
                            member_id: member.into(),
                            page: None,
                        })
                        .await
                        .map(tonic::Response::into_inner)
                }
            },
            // NOT_FOUND until referral has heard of the member from membership.
            |tree| tree.as_ref().is_ok_and(&check),
        )
        .await
        .unwrap()
    }
}

/// An online activation of `code` by the buyer with phone `buyer`, through `token` if given.
pub fn activation(
    brand: &str,
    code: &str,
    buyer: &str,
    device_serial: &str,
    token: &str,
) -> act::ActivateWarrantyRequest {
    act::ActivateWarrantyRequest {
        brand_id: brand.into(),
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
        referral_token: token.into(),
        device_serial: device_serial.into(),
    }
}

/// The same activation, sold by store `store_id`.
pub fn in_store(
    mut request: act::ActivateWarrantyRequest,
    store_id: &str,
) -> act::ActivateWarrantyRequest {
    request.channel = Some(act::PurchaseChannel {
        kind: act::PurchaseChannelKind::Store as i32,
        id: store_id.into(),
    });
    request
}

// Not every test file polls.
#[allow(unused_imports)]
pub use scanloop_testkit::eventually_value as eventually;

/// Waits until consumer group `group` has handled everything on `topic` now (a positive
/// signal: its committed offsets reached every partition's end).
pub async fn wait_consumed(group: &str, topic: &str) {
    scanloop_testkit::eventually_value(
        || scanloop_testkit::consumed_to_end(group, topic),
        |done| *done,
    )
    .await;
}

/// Every envelope on `topic` from the beginning up to its end now.
pub async fn envelopes_on(topic: &str) -> Vec<EventEnvelope> {
    scanloop_testkit::envelopes_on(topic).await.unwrap()
}

/// The envelopes on `topic` once it holds at least `records` (commands publish after they
/// answer).
pub async fn published(topic: &str, records: i64) -> Vec<EventEnvelope> {
    scanloop_testkit::envelopes_once(topic, records)
        .await
        .unwrap()
}

/// How many envelopes of each event type (the name after the package, e.g. "ParentSet").
pub fn count_by_type(envelopes: &[EventEnvelope]) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for envelope in envelopes {
        let name = envelope
            .event_type
            .rsplit('.')
            .next()
            .unwrap_or_default()
            .to_owned();
        *counts.entry(name).or_insert(0) += 1;
    }
    counts
}

/// A fixed expectation of [`count_by_type`], written as pairs.
pub fn counts(pairs: &[(&str, usize)]) -> BTreeMap<String, usize> {
    pairs.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect()
}

/// Asserts that a call was refused with `code` and a message naming what to fix.
#[track_caller]
pub fn assert_refused<T: std::fmt::Debug>(
    result: Result<tonic::Response<T>, tonic::Status>,
    code: tonic::Code,
    says: &str,
) {
    match result {
        Err(status) => {
            assert_eq!(status.code(), code, "{status:?}");
            assert!(
                status.message().contains(says),
                "the message should say {says:?}: {status:?}"
            );
        }
        Ok(answer) => panic!("expected {code:?} ({says}), got OK: {answer:?}"),
    }
}
