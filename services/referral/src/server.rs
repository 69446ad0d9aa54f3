//! Wires the referral service on the shared platform: its application, the reactions to
//! activation and membership events, the read-model projector and the gRPC API.

use std::sync::Arc;

use scanloop_bus::DeadLetters;
use scanloop_pii::IdentityHasher;
use scanloop_proto::referral::v1::referral_service_server::ReferralServiceServer;
use scanloop_service::Platform;
use tokio_util::sync::CancellationToken;

use crate::app::Referrals;
use crate::config::Config;
use crate::directory::Directory;
use crate::grpc::Api;
use crate::projections::ReadModels;
use crate::reaction::Reactions;

/// Runs the service on `listener` until `shutdown` is cancelled. Refuses to start if the schema
/// is missing.
pub async fn run(
    config: Config,
    listener: tokio::net::TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let mut platform = Platform::connect(&config.service, shutdown).await?;
    let read_models = ReadModels::new(platform.session.clone(), &config.service.keyspace).await?;
    let directory = Directory::new(platform.session.clone(), &config.service.keyspace).await?;
    let app = Arc::new(Referrals::new(
        platform.outbox.clone(),
        directory,
        IdentityHasher::new(config.service.identity_secret.clone()),
        config.rules.clone(),
        config.share_base_url.clone(),
        config.clock.clone(),
    ));
    platform.react(
        &[&config.activation_topic, &config.membership_topic],
        Reactions::new(
            app.clone(),
            DeadLetters::new(
                platform.producer.clone(),
                config.service.reaction_group.clone(),
            ),
            config.activation_topic.clone(),
        ),
    )?;
    platform.project(read_models.clone())?;
    let api = ReferralServiceServer::new(Api::new(app, read_models));
    platform.serve(listener, api, crate::access::ACCESS).await
}
