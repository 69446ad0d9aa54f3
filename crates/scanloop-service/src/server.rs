//! The gRPC server every service runs.

use std::net::SocketAddr;

use tokio_util::sync::CancellationToken;
use tonic::server::NamedService;
use tonic::service::Routes;

use crate::health::HealthChecks;

/// Cancels `token` on SIGTERM (what Kubernetes and compose send) or Ctrl-C.
pub async fn shutdown_signal(token: CancellationToken) {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(error) => {
                tracing::warn!(%error, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = terminate => {}
        _ = token.cancelled() => {}
    }
    tracing::info!("shutting down");
    token.cancel();
}

/// Serves `routes` plus the standard health service and server reflection, on an already bound
/// listener, until `shutdown` is cancelled; in-flight calls finish first.
///
/// Health: `S`'s name and "" are SERVING only while `health`'s probes reach Cassandra and Kafka
/// (see [`crate::health`]); [`crate::health::LIVENESS`] is SERVING while the process answers.
/// Reflection lists exactly what this server serves: `S`, health and reflection, though it can
/// describe every Scanloop message (the descriptor set holds all services).
pub async fn serve<S: NamedService>(
    listener: tokio::net::TcpListener,
    routes: Routes,
    health: HealthChecks,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(scanloop_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .with_service_name(S::NAME)
        .with_service_name(HEALTH_SERVICE)
        .with_service_name(REFLECTION_SERVICE)
        .build_v1()?;
    let addr: SocketAddr = listener.local_addr()?;
    let health_task =
        crate::health::start(health, health_reporter, S::NAME, shutdown.clone()).await;
    tracing::info!(%addr, service = S::NAME, "grpc server listening");
    // Nagle's algorithm on accepted sockets holds small response frames back for the peer's
    // delayed ACK (~40 ms per call); gRPC wants every frame out at once.
    let incoming = tonic::transport::server::TcpIncoming::from(listener)
        .with_nodelay(Some(true))
        .with_keepalive(Some(std::time::Duration::from_secs(60)));
    let stop = shutdown.clone();
    let routes = routes.add_service(health_service).add_service(reflection);
    let served = tonic::transport::Server::builder()
        .add_routes(with_unimplemented_fallback(routes, S::NAME))
        .serve_with_incoming_shutdown(incoming, stop.cancelled_owned())
        .await;
    shutdown.cancel();
    let _ = health_task.await;
    served?;
    Ok(())
}

/// Methods this server does not serve answer UNIMPLEMENTED saying what it does serve (the
/// default answer has an empty message, which leaves a caller guessing which port is which).
fn with_unimplemented_fallback(routes: Routes, service: &'static str) -> Routes {
    let router = routes
        .into_axum_router()
        .fallback(move |uri: axum::http::Uri| async move {
            tonic::Status::unimplemented(format!(
                "{} is not served here: this server serves {service}, {HEALTH_SERVICE} and \
                 {REFLECTION_SERVICE}",
                uri.path()
            ))
            .into_http::<axum::body::Body>()
        });
    Routes::from(router)
}

/// The names reflection lists besides the service itself.
const HEALTH_SERVICE: &str = "grpc.health.v1.Health";
const REFLECTION_SERVICE: &str = "grpc.reflection.v1.ServerReflection";
