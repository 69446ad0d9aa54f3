//! The membership binary as operators and tools see it: the health check SERVING with the
//! devstack up, and reflection listing exactly what this binary serves.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failed unwrap is a failed test

use std::collections::BTreeSet;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tonic::transport::Channel;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_reflection::pb::v1::ServerReflectionRequest;
use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

const MEMBERSHIP: &str = "scanloop.membership.v1.MembershipService";

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn health(channel: &Channel, service: &str) -> Option<ServingStatus> {
    let response = HealthClient::new(channel.clone())
        .check(HealthCheckRequest {
            service: service.into(),
        })
        .await
        .ok()?;
    Some(response.into_inner().status())
}

#[tokio::test]
async fn membership_reports_serving_and_reflection_lists_only_what_it_serves() {
    let session = scanloop_testkit::session().await.unwrap();
    let keyspace = scanloop_testkit::unique_name("test_mm_health");
    scanloop_storage::migrate(
        &session,
        &keyspace,
        1,
        "",
        &scanloop_membership::migrations(),
    )
    .await
    .unwrap();
    let topic = scanloop_testkit::fresh_topic("membership.health", 1)
        .await
        .unwrap();
    let activation_topic = scanloop_testkit::fresh_topic("membership.health.act", 1)
        .await
        .unwrap();
    let referral_topic = scanloop_testkit::fresh_topic("membership.health.ref", 1)
        .await
        .unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr = format!("127.0.0.1:{port}");
    let _service = Killed(
        Command::new(env!("CARGO_BIN_EXE_scanloop-membership"))
            .env("SCANLOOP_ENV", "dev")
            .env("SCANLOOP_GRPC_ADDR", &addr)
            .env("SCANLOOP_MEMBERSHIP_KEYSPACE", &keyspace)
            .env("SCANLOOP_MEMBERSHIP_TOPIC", &topic)
            .env("SCANLOOP_ACTIVATION_TOPIC", &activation_topic)
            .env("SCANLOOP_REFERRAL_TOPIC", &referral_topic)
            .env(
                "SCANLOOP_PROJECTION_GROUP",
                format!("{keyspace}-projections"),
            )
            .env("SCANLOOP_REACTION_GROUP", format!("{keyspace}-reactions"))
            .env(
                "SCANLOOP_CQL_NODES",
                scanloop_testkit::cql_nodes().join(","),
            )
            .env("SCANLOOP_KAFKA_BROKERS", scanloop_testkit::brokers())
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()
            .expect("the membership binary starts"),
    );
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect_lazy();
    assert!(
        scanloop_testkit::eventually(Duration::from_secs(60), || async {
            health(&channel, MEMBERSHIP).await == Some(ServingStatus::Serving)
        })
        .await,
        "membership never reported SERVING"
    );
    assert_eq!(health(&channel, "").await, Some(ServingStatus::Serving));
    assert_eq!(
        health(&channel, "liveness").await,
        Some(ServingStatus::Serving)
    );

    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let response = ServerReflectionClient::new(channel.clone())
        .server_reflection_info(futures::stream::iter([request]))
        .await
        .unwrap()
        .into_inner()
        .message()
        .await
        .unwrap()
        .unwrap();
    let Some(MessageResponse::ListServicesResponse(list)) = response.message_response else {
        panic!("list_services answers with a list");
    };
    let listed: BTreeSet<String> = list.service.into_iter().map(|s| s.name).collect();
    let expected: BTreeSet<String> = [
        "grpc.health.v1.Health",
        "grpc.reflection.v1.ServerReflection",
        MEMBERSHIP,
    ]
    .map(String::from)
    .into();
    assert_eq!(listed, expected);
}
