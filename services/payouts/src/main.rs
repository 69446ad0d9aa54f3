//! The payouts service process: configuration, telemetry, signals. Wiring only.

use scanloop_payouts::{config::Config, server};
use tokio_util::sync::CancellationToken;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let _telemetry = scanloop_telemetry::init("scanloop-payouts")?;
    let config = Config::from_env().inspect_err(|error| {
        // Also in the log stream (JSON in production), not only on the terminal.
        tracing::error!(%error, "invalid configuration: refusing to start");
    })?;
    let listener = tokio::net::TcpListener::bind(&config.grpc_addr).await?;
    let shutdown = CancellationToken::new();
    tokio::spawn(scanloop_service::shutdown_signal(shutdown.clone()));
    server::run(config, listener, shutdown).await
}
