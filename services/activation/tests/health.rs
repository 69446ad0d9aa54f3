//! What operators and tools see of a running service: the standard health check (healthy
//! devstack: everything SERVING) and server reflection (exactly what this binary serves). The
//! unhealthy cases stop the devstack, so they are in `faults.rs`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failed unwrap is a failed test

mod common;
mod ops;

use std::collections::BTreeSet;

use common::fresh_env;
use ops::{ACTIVATION, LoggedService};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
use tonic_reflection::pb::v1::{ServerReflectionRequest, ServerReflectionResponse};

#[tokio::test]
async fn with_cassandra_and_kafka_up_the_service_the_server_and_liveness_are_serving() {
    let env = fresh_env("health_up").await;
    let service = LoggedService::start(&env, &[]).await;
    for name in [ACTIVATION, "", "liveness"] {
        assert_eq!(
            service.health(name).await.unwrap(),
            ServingStatus::Serving,
            "{name:?}"
        );
    }
    let unknown = service
        .health("scanloop.membership.v1.MembershipService")
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), tonic::Code::NotFound);
}

async fn reflect(service: &LoggedService, request: MessageRequest) -> MessageResponse {
    let channel = tonic::transport::Endpoint::from_shared(service.url())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client = ServerReflectionClient::new(channel);
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(request),
    };
    let mut responses = client
        .server_reflection_info(tokio_stream::once(request))
        .await
        .unwrap()
        .into_inner();
    let response: ServerReflectionResponse = responses.message().await.unwrap().unwrap();
    response.message_response.unwrap()
}

#[tokio::test]
async fn reflection_lists_exactly_what_the_binary_serves() {
    let env = fresh_env("reflection").await;
    let service = LoggedService::start(&env, &[]).await;
    let MessageResponse::ListServicesResponse(list) =
        reflect(&service, MessageRequest::ListServices(String::new())).await
    else {
        panic!("list_services answers with a list");
    };
    let listed: BTreeSet<String> = list.service.into_iter().map(|s| s.name).collect();
    let expected: BTreeSet<String> = [
        "grpc.health.v1.Health",
        "grpc.reflection.v1.ServerReflection",
        "scanloop.activation.v1.ActivationService",
    ]
    .map(String::from)
    .into();
    assert_eq!(listed, expected);

    // Listing less does not describe less: what is served can still be looked up.
    let MessageResponse::FileDescriptorResponse(files) = reflect(
        &service,
        MessageRequest::FileContainingSymbol(ACTIVATION.into()),
    )
    .await
    else {
        panic!("the activation service's file is described");
    };
    assert!(!files.file_descriptor_proto.is_empty());

    // A service this binary does not serve: UNIMPLEMENTED, saying what is served here.
    let mut membership = scanloop_testkit::serving::connect(
        &service.addr,
        scanloop_proto::membership::v1::membership_service_client::MembershipServiceClient::new,
    )
    .await
    .unwrap();
    let status = membership
        .list_tiers(scanloop_proto::membership::v1::ListTiersRequest::default())
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unimplemented, "{status:?}");
    assert!(
        status
            .message()
            .contains("this server serves scanloop.activation.v1.ActivationService"),
        "{status:?}"
    );
}
