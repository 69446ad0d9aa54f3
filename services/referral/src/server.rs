//! Wires the referral service: store, outbox, sweeper, the reactions to activation and
//! membership events, the read-model projector and the gRPC server.

use std::sync::Arc;
use std::time::Duration;

use scanloop_bus::{ConsumerOptions, ConsumerRunner, EventProducer};
use scanloop_eventstore::{EventStore, Outbox, Projector, Sweeper};
use scanloop_pii::IdentityHasher;
use scanloop_proto::referral::v1::referral_service_server::ReferralServiceServer;
use scanloop_service::HealthChecks;
use scanloop_storage::Checkpoints;
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
    let session = scanloop_storage::session::connect_with_request_timeout(
        &config.infra.cql_nodes,
        Duration::from_secs(60),
        config.infra.cql_request_timeout,
    )
    .await?;
    let store = EventStore::new(session.clone(), &config.keyspace).await?;
    let read_models = ReadModels::new(session.clone(), &config.keyspace).await?;
    let directory = Directory::new(session.clone(), &config.keyspace).await?;
    let producer = EventProducer::new(&config.infra.kafka_brokers, Duration::from_secs(10))?;
    let health = HealthChecks::new(
        session.clone(),
        producer.clone(),
        config.topic.clone(),
        config.infra.health_check_interval,
        config.infra.cql_request_timeout,
    );
    let outbox = Outbox::new(
        store,
        &config.keyspace,
        producer.clone(),
        config.topic.clone(),
    )
    .await?;
    let app = Arc::new(Referrals::new(
        outbox.clone(),
        directory,
        IdentityHasher::new(config.identity_secret.clone()),
        config.rules.clone(),
        config.share_base_url.clone(),
        config.clock.clone(),
    ));
    let checkpoints = Checkpoints::new(session, &config.keyspace).await?;
    let consumer = |group: &str, topics: Vec<String>| {
        ConsumerOptions::new(config.infra.kafka_brokers.clone(), group.to_owned(), topics)
    };

    let sweeper = tokio::spawn(Sweeper::new(outbox).run(shutdown.clone()));
    let reacting = tokio::spawn(
        ConsumerRunner::new(
            consumer(
                &config.reaction_group,
                vec![
                    config.activation_topic.clone(),
                    config.membership_topic.clone(),
                ],
            ),
            Reactions::new(app.clone()),
            checkpoints.clone(),
            producer.clone(),
            shutdown.clone(),
        )?
        .run(),
    );
    let projecting = tokio::spawn(
        ConsumerRunner::new(
            consumer(&config.projection_group, vec![config.topic.clone()]),
            Projector(read_models.clone()),
            checkpoints,
            producer,
            shutdown.clone(),
        )?
        .run(),
    );

    let routes =
        tonic::service::Routes::new(ReferralServiceServer::new(Api::new(app, read_models)));
    let served = scanloop_service::serve::<ReferralServiceServer<Api>>(
        listener,
        routes,
        health,
        crate::access::ACCESS,
        &config.server,
        shutdown.clone(),
    )
    .await;
    shutdown.cancel();
    let _ = sweeper.await;
    reacting.await??;
    projecting.await??;
    served
}
