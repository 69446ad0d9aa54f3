//! Wires the membership service on the shared platform: its application, the reactions to
//! activations and referral shares, the read-model projector, the member-review timer jobs and
//! the gRPC API.

use std::sync::Arc;

use scanloop_pii::IdentityHasher;
use scanloop_proto::membership::v1::membership_service_server::MembershipServiceServer;
use scanloop_service::Platform;
use tokio_util::sync::CancellationToken;

use crate::app::Membership;
use crate::config::Config;
use crate::grpc::Api;
use crate::jobs::{MemberReview, ReviewSchedule};
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
    let app = Arc::new(Membership::new(
        platform.outbox.clone(),
        IdentityHasher::new(config.service.identity_secret.clone()),
        config.rules.clone(),
        config.clock.clone(),
    ));
    platform
        .timer_jobs(
            &config.timer_group,
            config.clock.clone(),
            config.timer_interval,
            ReviewSchedule::new(config.rules.clone()),
            MemberReview::new(app.clone()),
        )
        .await?;
    platform.react(
        &[&config.activation_topic, &config.referral_topic],
        Reactions::new(app.clone()),
    )?;
    platform.project(read_models.clone())?;
    let api = MembershipServiceServer::new(Api::new(app, read_models));
    platform.serve(listener, api, crate::access::ACCESS).await
}
