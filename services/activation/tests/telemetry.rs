//! Telemetry leaves the process: with the standard OTEL_* variables set, spans and metrics reach
//! an OTLP collector, and a caller's trace continues through the event on Kafka into the
//! consumer that projects it.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failed unwrap is a failed test

mod common;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{Service, activation, fresh_env, issue, request_id};
use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_server::{
    MetricsService, MetricsServiceServer,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};

/// A minimal OTLP/gRPC collector that remembers what it received.
#[derive(Clone, Default)]
struct Collector {
    /// (trace id hex, span name)
    spans: Arc<Mutex<Vec<(String, String)>>>,
    metrics: Arc<Mutex<HashSet<String>>>,
}

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut spans = self.spans.lock().unwrap();
        for resource in &request.get_ref().resource_spans {
            for scope in &resource.scope_spans {
                for span in &scope.spans {
                    spans.push((
                        data_encoding::HEXLOWER.encode(&span.trace_id),
                        span.name.clone(),
                    ));
                }
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

#[tonic::async_trait]
impl MetricsService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportMetricsServiceRequest>,
    ) -> Result<tonic::Response<ExportMetricsServiceResponse>, tonic::Status> {
        let mut metrics = self.metrics.lock().unwrap();
        for resource in &request.get_ref().resource_metrics {
            for scope in &resource.scope_metrics {
                for metric in &scope.metrics {
                    metrics.insert(metric.name.clone());
                }
            }
        }
        Ok(tonic::Response::new(ExportMetricsServiceResponse::default()))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traces_follow_an_activation_through_kafka_and_metrics_are_exported() {
    let collector = Collector::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    let serving = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(collector.clone()))
            .add_service(MetricsServiceServer::new(collector.clone()))
            .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener)),
    );

    let env = fresh_env("otel").await;
    let service = Service::start_with(
        &env,
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
            ("OTEL_METRIC_EXPORT_INTERVAL", "500"),
            ("OTEL_BSP_SCHEDULE_DELAY", "200"),
        ],
    )
    .await;
    let mut client = service.client().await;
    let (_, codes) = issue(&mut client, 1).await;

    // The caller's own trace: the service must continue it, not start a new one.
    let trace_id = uuid::Uuid::new_v4().simple().to_string();
    let mut request = tonic::Request::new(activation(&codes[0], &request_id()));
    request.metadata_mut().insert(
        "traceparent",
        format!("00-{trace_id}-00f067aa0ba902b7-01")
            .parse()
            .unwrap(),
    );
    client.activate_warranty(request).await.unwrap();

    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let wanted_metrics = [
        "scanloop.eventstore.append.duration",
        "scanloop.outbox.publish.lag",
        "scanloop.consumer.events",
        "scanloop.consumer.lag",
        "rpc.server.duration",
    ];
    loop {
        let names: Vec<String> = collector
            .spans
            .lock()
            .unwrap()
            .iter()
            .filter(|(trace, _)| *trace == trace_id)
            .map(|(_, name)| name.clone())
            .collect();
        let rpc = names
            .iter()
            .any(|n| n.ends_with("ActivationService/ActivateWarranty"));
        let consumed = names.iter().any(|n| n == "consume");
        let metrics = collector.metrics.lock().unwrap().clone();
        let all_metrics = wanted_metrics.iter().all(|m| metrics.contains(*m));
        if rpc && consumed && all_metrics {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "spans in the caller's trace: {names:?}; all spans: {:?}; metrics: {metrics:?}",
            collector
                .spans
                .lock()
                .unwrap()
                .iter()
                .take(8)
                .collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    serving.abort();
}
