//! Wires the payouts service on the shared platform: its application, the reactions to referral
//! and activation events, the vesting timer jobs, the read-model projector and the gRPC API.

use std::sync::Arc;

use scanloop_pii::IdentityHasher;
use scanloop_proto::payouts::v1::payouts_service_server::PayoutsServiceServer;
use scanloop_service::Platform;
use tokio_util::sync::CancellationToken;

use crate::app::Payouts;
use crate::config::Config;
use crate::grpc::Api;
use crate::jobs::{Vesting, VestingSchedule};
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
    let app = Arc::new(
        Payouts::new(
            platform.outbox.clone(),
            read_models.clone(),
            config.rules.clone(),
            config.clock.clone(),
            &config.service.keyspace,
        )
        .await?,
    );
    platform.react(
        &[&config.referral_topic, &config.activation_topic],
        Reactions::new(app.clone()),
    )?;
    platform.project(read_models)?;
    platform
        .timer_jobs(
            &config.timer_group,
            config.clock.clone(),
            config.timer_interval,
            VestingSchedule,
            Vesting::new(app.clone()),
        )
        .await?;
    let hasher = IdentityHasher::new(config.service.identity_secret.clone());
    let api = PayoutsServiceServer::new(Api::new(app, hasher));
    platform.serve(listener, api, crate::access::ACCESS).await
}
