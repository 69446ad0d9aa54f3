//! The activation service while the devstack's Cassandra or Kafka is frozen (SIGSTOP) or killed:
//! callers get a prompt UNAVAILABLE, the health check turns NOT_SERVING, and everything works
//! again once the dependency is back. These tests stop the shared devstack, so `scripts/test`
//! runs them alone, after everything else (their names start with `fault_`).

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failed unwrap is a failed test

mod common;
mod ops;

use std::time::{Duration, Instant};

use common::{activation, fresh_env, issue, request_id};
use ops::{ACTIVATION, CassandraDown, Frozen, LoggedService};
use scanloop_proto::activation::v1::activation_service_client::ActivationServiceClient;
use tonic_health::pb::health_check_response::ServingStatus;

/// The documented default of SCANLOOP_CQL_REQUEST_TIMEOUT_MS.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);
/// What a loaded 2-core machine may add to it (scheduling, the gRPC round trip).
const SLACK: Duration = Duration::from_secs(2);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_a_frozen_database_answers_unavailable_within_the_request_timeout_and_logs_why() {
    let env = fresh_env("frozen_db").await;
    let service = LoggedService::start(&env, &[]).await;
    let mut client =
        scanloop_testkit::serving::connect(&service.addr, ActivationServiceClient::new)
            .await
            .unwrap();
    let (_, codes) = issue(&mut client, 2).await;
    let request = activation(&codes[0], &request_id());

    let frozen = Frozen::freeze("cassandra");
    let mut call = tonic::Request::new(request.clone());
    call.set_timeout(Duration::from_secs(30)); // a patient caller: the service must not be
    let started = Instant::now();
    let status = client.activate_warranty(call).await.unwrap_err();
    let elapsed = started.elapsed();
    eprintln!("frozen database: {:?} after {elapsed:?}", status.code());
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    assert!(
        status.message().contains("unavailable; retry later"),
        "{status:?}"
    );
    assert!(
        elapsed < REQUEST_TIMEOUT + SLACK,
        "answered after {elapsed:?}, the bound is {REQUEST_TIMEOUT:?}"
    );
    // The log says why: the database did not answer within the request timeout.
    assert!(
        scanloop_testkit::eventually(Duration::from_secs(5), || async {
            service
                .log()
                .iter()
                .any(|line| line.contains("unavailable") && line.contains("timeout of 2000ms"))
        })
        .await,
        "no log line says why: {:#?}",
        service.log()
    );
    frozen.thaw();

    // Back: the same request (same id, as a caller retries) is confirmed, once.
    let confirmed = scanloop_testkit::eventually(Duration::from_secs(60), || {
        let mut client = client.clone();
        let request = request.clone();
        async move { client.activate_warranty(request).await.is_ok() }
    })
    .await;
    assert!(confirmed, "the service never recovered after SIGCONT");
    let again = client.activate_warranty(request.clone()).await.unwrap();
    assert_eq!(again.into_inner().code, codes[0]);
    // And new work goes through.
    client
        .activate_warranty(activation(&codes[1], &request_id()))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_health_is_not_serving_while_cassandra_is_down_and_serving_once_it_is_back() {
    let env = fresh_env("health_db").await;
    let service = LoggedService::start(&env, &[("SCANLOOP_HEALTH_CHECK_INTERVAL_MS", "500")]).await;
    let mut client =
        scanloop_testkit::serving::connect(&service.addr, ActivationServiceClient::new)
            .await
            .unwrap();
    let (_, codes) = issue(&mut client, 1).await;

    let down = CassandraDown::kill();
    assert!(
        service
            .wait_for(
                ACTIVATION,
                ServingStatus::NotServing,
                Duration::from_secs(30)
            )
            .await,
        "still SERVING with cassandra killed"
    );
    assert_eq!(service.health("").await.unwrap(), ServingStatus::NotServing);
    // Readiness fails, liveness does not: restarting the pod would not bring the database back.
    assert_eq!(
        service.health("liveness").await.unwrap(),
        ServingStatus::Serving
    );
    down.restart(); // devstack up: returns once CQL answers

    assert!(
        service
            .wait_for(ACTIVATION, ServingStatus::Serving, Duration::from_secs(120))
            .await,
        "not SERVING again after cassandra returned"
    );
    assert_eq!(service.health("").await.unwrap(), ServingStatus::Serving);
    let log = service.log();
    let went_down = log
        .iter()
        .filter(|l| l.contains("dependency unreachable") && l.contains("cassandra"))
        .count();
    assert_eq!(
        went_down, 1,
        "the outage is logged once, not every round: {log:#?}"
    );
    assert!(
        log.iter().any(|l| l.contains("health SERVING")),
        "the recovery is logged: {log:#?}"
    );
    // Serving means serving: a command works.
    let request = activation(&codes[0], &request_id());
    let confirmed = scanloop_testkit::eventually(Duration::from_secs(30), || {
        let mut client = client.clone();
        let request = request.clone();
        async move { client.activate_warranty(request).await.is_ok() }
    })
    .await;
    assert!(confirmed, "SERVING but commands fail");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_health_is_not_serving_while_kafka_is_frozen_and_serving_once_it_resumes() {
    let env = fresh_env("health_kafka").await;
    let service = LoggedService::start(&env, &[("SCANLOOP_HEALTH_CHECK_INTERVAL_MS", "500")]).await;

    let frozen = Frozen::freeze("kafka");
    let went_down = service
        .wait_for(
            ACTIVATION,
            ServingStatus::NotServing,
            Duration::from_secs(30),
        )
        .await;
    let log = service.log();
    frozen.thaw();
    assert!(went_down, "still SERVING with kafka frozen");
    assert!(
        log.iter()
            .any(|l| l.contains("dependency unreachable") && l.contains("kafka")),
        "the log names kafka: {log:#?}"
    );
    assert!(
        service
            .wait_for(ACTIVATION, ServingStatus::Serving, Duration::from_secs(60))
            .await,
        "not SERVING again after kafka resumed"
    );
}
