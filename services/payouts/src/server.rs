//! Wires the payouts service on the shared platform: its application, the reactions to referral
//! and activation events, the vesting timer jobs, the read-model projector and the gRPC API.

use std::sync::Arc;

use scanloop_pii::IdentityHasher;
use scanloop_proto::payouts::v1::payouts_service_server::PayoutsServiceServer;
use scanloop_service::{Home, Platform};
use tokio_util::sync::CancellationToken;

use crate::app::Payouts;
use crate::config::Config;
use crate::grpc::Api;
use crate::jobs::{Vesting, VestingScheduler};
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
    let app = Arc::new(
        Payouts::new(
            platform.outbox.clone(),
            read_models.clone(),
            config.rules.clone(),
            config.clock.clone(),
            &config.keyspace,
        )
        .await?,
    );
    platform.react(
        &config.reaction_group,
        &[&config.referral_topic, &config.activation_topic],
        Reactions::new(app.clone()),
    )?;
    platform.project(&config.projection_group, read_models)?;
    platform
        .timer_jobs(
            &config.timer_group,
            config.clock.clone(),
            config.timer_interval,
            VestingScheduler::new,
            Vesting::new(app.clone()),
        )
        .await?;
    let hasher = IdentityHasher::new(config.identity_secret.clone());
    let api = PayoutsServiceServer::new(Api::new(app, hasher));
    platform
        .serve(listener, api, crate::access::ACCESS, &config.server)
        .await
}
