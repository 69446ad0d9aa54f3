//! The gRPC server every service runs.

use std::net::SocketAddr;

use tokio_util::sync::CancellationToken;
use tonic::server::NamedService;
use tonic::service::Routes;

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

/// Serves `routes` plus the standard health service (reporting `S` and the overall server as
/// serving) and server reflection over Scanloop's descriptors, on an already bound listener,
/// until `shutdown` is cancelled; in-flight calls finish first.
pub async fn serve<S: NamedService>(
    listener: tokio::net::TcpListener,
    routes: Routes,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    health_reporter
        .set_service_status(S::NAME, tonic_health::ServingStatus::Serving)
        .await;
    health_reporter
        .set_service_status("", tonic_health::ServingStatus::Serving)
        .await;
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(scanloop_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()?;
    let addr: SocketAddr = listener.local_addr()?;
    tracing::info!(%addr, service = S::NAME, "grpc server listening");
    // Nagle's algorithm on accepted sockets holds small response frames back for the peer's
    // delayed ACK (~40 ms per call); gRPC wants every frame out at once.
    let incoming = tonic::transport::server::TcpIncoming::from(listener)
        .with_nodelay(Some(true))
        .with_keepalive(Some(std::time::Duration::from_secs(60)));
    let stop = shutdown.clone();
    tonic::transport::Server::builder()
        .add_routes(routes)
        .add_service(health_service)
        .add_service(reflection)
        .serve_with_incoming_shutdown(incoming, async move {
            stop.cancelled().await;
            let _ = health_reporter;
        })
        .await?;
    Ok(())
}
