//! Wires the referral service on the shared platform: its application, the reactions to
//! activation and membership events, the read-model projector and the gRPC API.

use std::sync::Arc;

use scanloop_pii::IdentityHasher;
use scanloop_proto::referral::v1::referral_service_server::ReferralServiceServer;
use scanloop_service::{Home, Platform};
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
    let home = Home {
        infra: &config.infra,
        keyspace: &config.keyspace,
        topic: &config.topic,
    };
    let mut platform = Platform::connect(home, shutdown).await?;
    let read_models = ReadModels::new(platform.session.clone(), &config.keyspace).await?;
    let directory = Directory::new(platform.session.clone(), &config.keyspace).await?;
    let app = Arc::new(Referrals::new(
        platform.outbox.clone(),
        directory,
        IdentityHasher::new(config.identity_secret.clone()),
        config.rules.clone(),
        config.share_base_url.clone(),
        config.clock.clone(),
    ));
    platform.react(
        &config.reaction_group,
        &[&config.activation_topic, &config.membership_topic],
        Reactions::new(app.clone()),
    )?;
    platform.project(&config.projection_group, read_models.clone())?;
    let api = ReferralServiceServer::new(Api::new(app, read_models));
    platform
        .serve(listener, api, crate::access::ACCESS, &config.server)
        .await
}
