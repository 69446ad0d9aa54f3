//! Runs all four services in-process against the devstack: referral's test cluster
//! (activation, membership, referral) plus payouts, with a keyspace, topic and consumer groups
//! of the test's own. The referral and payouts instances share one clock a test can move.

#![allow(dead_code)]

use std::time::Duration;

use chrono::{DateTime, Utc};
use scanloop_config::Secret;
use scanloop_proto::common::v1::{Money, PageRequest};
use scanloop_proto::payouts::v1 as pb;
use scanloop_proto::payouts::v1::payouts_service_client::PayoutsServiceClient;
use scanloop_testkit::serving::AuthChannel;

#[path = "../../../referral/tests/common/mod.rs"]
pub mod referral;

// Not every test file uses each.
#[allow(unused_imports)]
pub use referral::{
    BRAND, activation, envelopes_on, eventually, published, request_id, wait_consumed,
};

pub struct Loop {
    pub cluster: referral::Cluster,
    pub payouts: PayoutsServiceClient<AuthChannel>,
    pub payouts_keyspace: String,
    pub payouts_topic: String,
}

impl std::ops::Deref for Loop {
    type Target = referral::Cluster;
    fn deref(&self) -> &referral::Cluster {
        &self.cluster
    }
}

impl std::ops::DerefMut for Loop {
    fn deref_mut(&mut self) -> &mut referral::Cluster {
        &mut self.cluster
    }
}

pub fn fen(amount_fen: i64) -> Option<Money> {
    Some(Money {
        amount_fen,
        currency: "CNY".into(),
    })
}

pub fn amount(money: &Option<Money>) -> i64 {
    money.as_ref().map_or(0, |m| m.amount_fen)
}

pub fn member(id: &str) -> Option<pb::Beneficiary> {
    Some(pb::Beneficiary {
        kind: pb::BeneficiaryKind::Member as i32,
        id: id.into(),
    })
}

pub fn bps(level: u32, basis_points: u32) -> pb::LevelRate {
    pb::LevelRate {
        level,
        rate: Some(pb::Rate {
            kind: Some(pb::rate::Kind::BasisPoints(basis_points)),
        }),
    }
}

/// The brand default plan the tests use: 5% level 1, 2% level 2 (acknowledged), 30 days.
pub fn two_level_plan(brand: &str, minimum_fen: i64) -> pb::UpsertPlanRequest {
    pb::UpsertPlanRequest {
        request_id: request_id(),
        brand_id: brand.into(),
        sku: String::new(),
        levels: vec![bps(1, 500), bps(2, 200)],
        store: None,
        cap_per_sale: None,
        return_window_days: 30,
        minimum_payout: fen(minimum_fen),
        level2_acknowledgement: Some(pb::ComplianceAcknowledgement {
            acknowledged_by: "legal@acme".into(),
            acknowledged_at: None,
            statement: "level 2 reviewed by counsel for the test brand".into(),
        }),
    }
}

/// Runs a payouts server in `cluster` (stopped with it) and connects to it.
async fn spawn_payouts(
    cluster: &mut referral::Cluster,
    keyspace: &str,
    topic: &str,
    reactions: &str,
    projections: &str,
) -> PayoutsServiceClient<AuthChannel> {
    let (listener, addr) = scanloop_testkit::serving::listener().await.unwrap();
    let config = scanloop_payouts::config::Config {
        service: scanloop_service::ServiceConfig {
            infra: scanloop_testkit::serving::infra(),
            server: scanloop_testkit::serving::server_settings(),
            grpc_addr: addr.clone(),
            keyspace: keyspace.to_owned(),
            topic: topic.to_owned(),
            identity_secret: Secret::new("test-identity-secret".into()),
            projection_group: format!("{keyspace}-{projections}"),
            reaction_group: format!("{keyspace}-{reactions}"),
        },
        referral_topic: cluster.referral_topic.clone(),
        activation_topic: cluster.activation_topic.clone(),
        timer_group: format!("{keyspace}-timers"),
        timer_interval: Duration::from_millis(300),
        rules: scanloop_payouts::config::Rules::default(),
        clock: cluster.clock.clone(),
    };
    cluster
        .tasks
        .push(tokio::spawn(scanloop_payouts::server::run(
            config,
            listener,
            cluster.shutdown.clone(),
        )));
    let client = scanloop_testkit::serving::connect(&addr, PayoutsServiceClient::new)
        .await
        .unwrap();
    cluster
        .addrs
        .insert("scanloop.payouts.v1.PayoutsService", addr);
    client
}

impl Loop {
    pub async fn start(name: &str) -> Loop {
        let cluster = referral::Cluster::start(name).await;
        let session = scanloop_testkit::session().await.unwrap();
        let keyspace = scanloop_testkit::unique_name(&format!("test_rp_{name}"));
        scanloop_storage::migrate(&session, &keyspace, 1, "", &scanloop_payouts::migrations())
            .await
            .unwrap();
        let payouts_topic = scanloop_testkit::fresh_topic(&format!("{name}.payouts"), 3)
            .await
            .unwrap();
        let mut cluster = cluster;
        let payouts = spawn_payouts(
            &mut cluster,
            &keyspace,
            &payouts_topic,
            "reactions",
            "projections",
        )
        .await;
        Loop {
            cluster,
            payouts,
            payouts_keyspace: keyspace,
            payouts_topic,
        }
    }

    /// Starts (another) payouts instance with these consumer groups (named within the test).
    pub async fn start_payouts(&mut self, reactions: &str, projections: &str) {
        let (keyspace, topic) = (self.payouts_keyspace.clone(), self.payouts_topic.clone());
        self.payouts =
            spawn_payouts(&mut self.cluster, &keyspace, &topic, reactions, projections).await;
    }

    pub fn payouts_group(&self, name: &str) -> String {
        format!("{}-{name}", self.payouts_keyspace)
    }

    pub async fn stop(self) {
        self.cluster.stop().await;
        let session = scanloop_testkit::session().await.unwrap();
        scanloop_testkit::drop_keyspaces(&session, &[&self.payouts_keyspace]).await;
    }

    /// Moves the referral and payouts clock forward.
    pub fn advance(&self, by: chrono::Duration) {
        self.cluster.clock.advance(by);
    }

    pub fn now(&self) -> DateTime<Utc> {
        use scanloop_timers::Clock as _;
        self.cluster.clock.now()
    }

    /// A beneficiary's commissions, once `check` holds for them.
    pub async fn commissions_of(
        &self,
        member_id: &str,
        check: impl Fn(&[pb::Commission]) -> bool,
    ) -> Vec<pb::Commission> {
        let client = self.payouts.clone();
        eventually(
            || {
                let mut client = client.clone();
                async move {
                    client
                        .list_commissions(pb::ListCommissionsRequest {
                            brand_id: BRAND.into(),
                            of: Some(pb::list_commissions_request::Of::Beneficiary(
                                member(member_id).unwrap(),
                            )),
                            page: Some(PageRequest {
                                page_size: 500,
                                page_token: String::new(),
                            }),
                        })
                        .await
                        .unwrap()
                        .into_inner()
                        .commissions
                }
            },
            |c| check(c),
        )
        .await
    }

    /// A beneficiary's account, once `check` holds for it.
    pub async fn account(
        &self,
        member_id: &str,
        check: impl Fn(&pb::Account) -> bool,
    ) -> pb::Account {
        let client = self.payouts.clone();
        eventually(
            || {
                let mut client = client.clone();
                async move {
                    client
                        .get_account(pb::GetAccountRequest {
                            brand_id: BRAND.into(),
                            beneficiary: member(member_id),
                        })
                        .await
                        .unwrap()
                        .into_inner()
                }
            },
            |a| check(a),
        )
        .await
    }

    /// Settles everything vested up to now.
    pub async fn settle(&self, request_id: &str) -> Result<pb::SettlementBatch, tonic::Status> {
        self.settle_at(
            request_id,
            Some(scanloop_proto::time::to_timestamp(self.now())),
        )
        .await
    }

    pub async fn settle_at(
        &self,
        request_id: &str,
        cutoff: Option<prost_types::Timestamp>,
    ) -> Result<pb::SettlementBatch, tonic::Status> {
        self.payouts
            .clone()
            .run_settlement(pb::RunSettlementRequest {
                brand_id: BRAND.into(),
                request_id: request_id.into(),
                cutoff,
            })
            .await
            .map(tonic::Response::into_inner)
    }

    /// A batch as the read model shows it, once `check` holds.
    pub async fn settlement(
        &self,
        batch_id: &str,
        check: impl Fn(&pb::SettlementBatch) -> bool,
    ) -> pb::SettlementBatch {
        let client = self.payouts.clone();
        eventually(
            || {
                let mut client = client.clone();
                async move {
                    client
                        .get_settlement(pb::GetSettlementRequest {
                            brand_id: BRAND.into(),
                            batch_id: batch_id.into(),
                            page: Some(PageRequest {
                                page_size: 500,
                                page_token: String::new(),
                            }),
                        })
                        .await
                        .map(tonic::Response::into_inner)
                        .unwrap_or_default()
                }
            },
            |b| check(b),
        )
        .await
    }

    /// Reconciles the brand (`scanloop payouts reconcile`) once the read models caught up with
    /// the topic: every account and batch recomputed from the events agrees with them.
    pub async fn reconciled(&self) -> scanloop_payouts::reconcile::Report {
        wait_consumed(&self.payouts_group("projections"), &self.payouts_topic).await;
        let report = scanloop_payouts::reconcile::check(
            &scanloop_testkit::brokers(),
            &self.payouts_topic,
            BRAND,
            self.payouts.clone(),
        )
        .await
        .unwrap();
        assert!(
            report.differences.is_empty(),
            "the events and the read models differ: {:#?}",
            report.differences
        );
        assert!(report.events > 0 && report.accounts > 0, "{report:?}");
        report
    }

    pub async fn ledger(&self) -> pb::LedgerCheck {
        self.payouts
            .clone()
            .check_ledger(pb::CheckLedgerRequest {
                brand_id: BRAND.into(),
            })
            .await
            .unwrap()
            .into_inner()
    }
}
