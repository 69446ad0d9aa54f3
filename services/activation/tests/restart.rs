//! The service killed (SIGKILL) under load and restarted: nothing lost, nothing applied twice.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failed unwrap is a failed test

mod common;

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::{BRAND, Service, activation, fresh_env, issue, request_id};
use scanloop_activation::domain::warranty::stream_id;
use scanloop_proto::activation::v1 as pb;
use scanloop_proto::activation::v1::activation_service_client::ActivationServiceClient;
use tokio::sync::watch;

/// Whether a failed call may be retried while the service is killed and restarted. The service
/// itself may only say UNAVAILABLE (a dependency is away) or ABORTED (contention: retry). The
/// client's own transport reports a connection cut by the kill as UNAVAILABLE, UNKNOWN or
/// CANCELLED; those statuses carry the transport error as their source, while a status the
/// server sent never has one. INTERNAL is never transient: from the server it is a bug, from
/// the transport a stream the server reset because its handler failed.
fn is_transient(status: &tonic::Status) -> bool {
    use tonic::Code;
    let from_transport = std::error::Error::source(status).is_some();
    match status.code() {
        Code::Unavailable | Code::Aborted => true,
        Code::Unknown | Code::Cancelled => from_transport,
        _ => false,
    }
}

/// Activates `code`, retrying with the same request id through failures and restarts, as a
/// well-behaved caller does. Returns once the service confirms.
async fn activate_until_confirmed(addr: watch::Receiver<String>, code: String) -> pb::Warranty {
    let request = activation(&code, &request_id());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    loop {
        let current = addr.borrow().clone();
        if let Ok(channel) = tonic::transport::Endpoint::from_shared(format!("http://{current}"))
            .unwrap()
            .connect()
            .await
        {
            let mut client = ActivationServiceClient::new(scanloop_service::access::authorized(
                channel,
                scanloop_testkit::serving::platform_bearer(),
            ));
            match client.activate_warranty(request.clone()).await {
                Ok(warranty) => return warranty.into_inner(),
                Err(status) => assert!(
                    is_transient(&status),
                    "only transient failures are acceptable, got {status:?}"
                ),
            }
        }
        assert!(tokio::time::Instant::now() < deadline, "never confirmed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[test]
fn statuses_the_server_sent_are_transient_only_when_they_say_so() {
    use tonic::{Code, Status};
    // Sent by the server (no source): only UNAVAILABLE and ABORTED are retried.
    assert!(is_transient(&Status::unavailable(
        "event store unavailable"
    )));
    assert!(is_transient(&Status::aborted("contention")));
    for code in [
        Code::Internal,
        Code::Unknown,
        Code::Cancelled,
        Code::InvalidArgument,
    ] {
        assert!(
            !is_transient(&Status::new(code, "from the server")),
            "{code:?}"
        );
    }
    // Raised by the client's transport when the connection is cut: retried, unless INTERNAL.
    let cut = std::sync::Arc::new(std::io::Error::from(std::io::ErrorKind::ConnectionReset));
    for (code, transient) in [
        (Code::Unknown, true),
        (Code::Cancelled, true),
        (Code::Internal, false),
    ] {
        let mut status = Status::new(code, "transport");
        status.set_source(cut.clone());
        assert_eq!(is_transient(&status), transient, "{code:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_service_killed_under_load_and_restarted_loses_nothing_and_applies_nothing_twice() {
    let env = fresh_env("restart").await;
    let mut first = Service::start(&env).await;
    let (batch_id, codes) = issue(&mut first.client().await, 300).await;

    let (addr_tx, addr_rx) = watch::channel(first.addr.clone());
    let confirmed = Arc::new(AtomicUsize::new(0));
    let workers: Vec<_> = codes
        .chunks(300 / 12)
        .map(|chunk| {
            let (chunk, addr, confirmed) = (chunk.to_vec(), addr_rx.clone(), confirmed.clone());
            tokio::spawn(async move {
                let mut results = Vec::new();
                for code in chunk {
                    results.push(activate_until_confirmed(addr.clone(), code).await);
                    confirmed.fetch_add(1, Ordering::Relaxed);
                }
                results
            })
        })
        .collect();

    // Kill it mid-load, then start a new instance on the same keyspace and topic.
    while confirmed.load(Ordering::Relaxed) < 60 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    first.kill();
    let killed_at = confirmed.load(Ordering::Relaxed);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let second = Service::start(&env).await;
    addr_tx.send(second.addr.clone()).unwrap();

    let mut warranties = Vec::new();
    for worker in workers {
        warranties.extend(worker.await.unwrap());
    }
    assert!(
        killed_at < 300,
        "the kill happened under load ({killed_at} confirmed before it)"
    );
    assert_eq!(warranties.len(), 300, "every caller got a confirmation");
    assert!(
        warranties
            .iter()
            .all(|w| w.status == pb::WarrantyStatus::Active as i32)
    );

    // Write side: exactly one activation per code.
    let session = scanloop_testkit::session().await.unwrap();
    let store = scanloop_eventstore::EventStore::new(session.clone(), &env.keyspace)
        .await
        .unwrap();
    for serial in 1..=300 {
        let events = store
            .load(&stream_id(BRAND, batch_id.parse().unwrap(), serial), 0)
            .await
            .unwrap();
        let activations = events
            .iter()
            .filter(|e| e.event_type == "scanloop.activation.v1.WarrantyActivated")
            .count();
        assert_eq!(activations, 1, "serial {serial}");
    }

    // Read side: every warranty projected (the restarted instance's sweeper publishes what the
    // killed one stored but did not publish), each by exactly its one activation.
    let mut client = second.client().await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let mut missing: HashSet<String> = codes.iter().cloned().collect();
    while !missing.is_empty() {
        let mut still = HashSet::new();
        for code in missing {
            let warranty = client
                .get_warranty(pb::GetWarrantyRequest {
                    brand_id: BRAND.into(),
                    by: Some(pb::get_warranty_request::By::Code(code.clone())),
                })
                .await
                .unwrap()
                .into_inner();
            if warranty.status != pb::WarrantyStatus::Active as i32 {
                still.insert(code);
            } else {
                assert_eq!(warranty.version, 1, "one event in the stream, applied once");
            }
        }
        missing = still;
        if !missing.is_empty() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "{} never projected",
                missing.len()
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
}
