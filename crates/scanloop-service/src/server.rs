//! The gRPC server every service runs.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context as _;
use tonic::transport::{Certificate, Identity, ServerTlsConfig};

use tokio_util::sync::CancellationToken;
use tonic::server::NamedService;
use tonic::service::Routes;

use crate::access::gate::{AccessLayer, HEALTH_SERVICE, Policy, REFLECTION_SERVICE};
use crate::access::settings::KeyRing;
use crate::access::{AccessTable, ServerSettings, TlsFiles};
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
/// Every call passes the access gate first ([`crate::access::gate`]): `access` is the service's
/// table of who may call each RPC; `settings` names the trusted token keys, the abuse limits and
/// TLS. With TLS and `health_addr` set, the health service alone is also served in plaintext
/// there (for probes that cannot speak TLS).
///
/// Health: `S`'s name and "" are SERVING only while `health`'s probes reach Cassandra and Kafka
/// (see [`crate::health`]); [`crate::health::LIVENESS`] is SERVING while the process answers.
/// Reflection lists exactly what this server serves: `S`, health and reflection, though it can
/// describe every Scanloop message (the descriptor set holds all services).
pub async fn serve<S: NamedService>(
    listener: tokio::net::TcpListener,
    routes: Routes,
    health: HealthChecks,
    access: AccessTable,
    settings: &ServerSettings,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let keys = KeyRing::load(settings)?;
    let policy = Arc::new(Policy::new(
        S::NAME,
        access,
        keys.clone(),
        settings.limits,
        settings.development,
    )?);
    let tls = settings.tls.as_ref().map(tls_config).transpose()?;
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
    let watching = tokio::spawn(keys.watch(settings.reload_interval, shutdown.clone()));
    let forgetting = tokio::spawn(forget_idle_clients(policy.clone(), shutdown.clone()));
    let plain_health = match (&settings.health_addr, &tls) {
        (Some(health_addr), Some(_)) => {
            let health_listener = tokio::net::TcpListener::bind(health_addr).await?;
            tracing::info!(addr = %health_listener.local_addr()?, "plaintext health listening");
            let incoming = tonic::transport::server::TcpIncoming::from(health_listener);
            let server = tonic::transport::Server::builder()
                .add_service(health_service.clone())
                .serve_with_incoming_shutdown(incoming, shutdown.clone().cancelled_owned());
            Some(tokio::spawn(server))
        }
        _ => None,
    };
    tracing::info!(%addr, service = S::NAME, tls = tls.is_some(), "grpc server listening");
    // Nagle's algorithm on accepted sockets holds small response frames back for the peer's
    // delayed ACK (~40 ms per call); gRPC wants every frame out at once.
    let incoming = tonic::transport::server::TcpIncoming::from(listener)
        .with_nodelay(Some(true))
        .with_keepalive(Some(std::time::Duration::from_secs(60)));
    let stop = shutdown.clone();
    let routes = routes.add_service(health_service).add_service(reflection);
    let mut builder = tonic::transport::Server::builder();
    if let Some(tls) = tls {
        builder = builder.tls_config(tls)?;
    }
    let served = builder
        // Outermost first: every call is observed, refusals included, then admitted or refused.
        .layer(crate::trace::RpcLayer)
        .layer(AccessLayer::new(policy))
        .add_routes(with_unimplemented_fallback(routes, S::NAME))
        .serve_with_incoming_shutdown(incoming, stop.cancelled_owned())
        .await;
    shutdown.cancel();
    let _ = health_task.await;
    let _ = watching.await;
    let _ = forgetting.await;
    if let Some(plain_health) = plain_health {
        plain_health.await??;
    }
    served?;
    Ok(())
}

/// The server side of TLS from PEM files; with a client CA, clients must present a certificate
/// it signed.
fn tls_config(files: &TlsFiles) -> anyhow::Result<ServerTlsConfig> {
    let read = |path: &std::path::Path| {
        std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))
    };
    let identity = Identity::from_pem(read(&files.cert)?, read(&files.key)?);
    let mut config = ServerTlsConfig::new().identity(identity);
    if let Some(client_ca) = &files.client_ca {
        config = config.client_ca_root(Certificate::from_pem(read(client_ca)?));
    }
    Ok(config)
}

/// Every minute, lets the abuse limits forget clients that have been quiet.
async fn forget_idle_clients(policy: Arc<Policy>, shutdown: CancellationToken) {
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(std::time::Duration::from_secs(60)) => policy.forget_idle(),
        }
    }
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
