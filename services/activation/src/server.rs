//! Wires the activation service on the shared platform: its application, the read-model
//! projector, the reaction to assist completions (referral events) and the gRPC API. Used by
//! `main.rs` and by the integration tests (which start it on port 0 with a fresh keyspace).

use std::sync::Arc;

use scanloop_pii::IdentityHasher;
use scanloop_proto::activation::v1::activation_service_server::ActivationServiceServer;
use scanloop_service::Platform;
use tokio_util::sync::CancellationToken;

use crate::app::Activation;
use crate::config::Config;
use crate::domain::code::CodeSigner;
use crate::domain::warranty::{PurchaseLimits, Rules};
use crate::grpc::Api;
use crate::projections::ReadModels;
use crate::reaction::AssistReaction;

/// Runs the service on `listener` until `shutdown` is cancelled. Refuses to start if the schema
/// is missing.
pub async fn run(
    config: Config,
    listener: tokio::net::TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let mut platform = Platform::connect(&config.service, shutdown).await?;
    let read_models = ReadModels::new(platform.session.clone(), &config.service.keyspace).await?;
    let app = Arc::new(Activation::new(
        platform.outbox.clone(),
        CodeSigner::new(config.code_secret.clone(), config.code_base_url.clone()),
        IdentityHasher::new(config.service.identity_secret.clone()),
        rules(&config),
        read_models.clone(),
    ));
    platform.project(read_models)?;
    platform.react(&[&config.referral_topic], AssistReaction::new(app.clone()))?;
    let api = ActivationServiceServer::new(Api::new(app));
    platform.serve(listener, api, crate::access::ACCESS).await
}

fn rules(config: &Config) -> Rules {
    Rules {
        return_window: chrono::Duration::days(config.return_window_days),
        suspicious_scan_window: chrono::Duration::minutes(config.suspicious_scan_minutes),
        purchase: PurchaseLimits {
            max_age: chrono::Duration::days(config.purchase_max_age_days),
            max_amount_fen: config.purchase_max_fen,
            max_amount_fen_by_brand: config.purchase_max_fen_by_brand.0.clone(),
            ..PurchaseLimits::default()
        },
        ..Rules::default()
    }
}
