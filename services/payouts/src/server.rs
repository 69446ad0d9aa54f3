//! Wires the payouts service: store, outbox, sweeper, the reactions to referral and activation
//! events, the vesting job, the read-model projector and the gRPC server.

use std::sync::Arc;
use std::time::Duration;

use scanloop_bus::{ConsumerOptions, ConsumerRunner, EventProducer};
use scanloop_eventstore::{EventStore, Outbox, Projector, Sweeper};
use scanloop_pii::IdentityHasher;
use scanloop_proto::payouts::v1::payouts_service_server::PayoutsServiceServer;
use scanloop_service::HealthChecks;
use scanloop_storage::Checkpoints;
use tokio_util::sync::CancellationToken;

use crate::app::Payouts;
use crate::config::Config;
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
    let app = Arc::new(
        Payouts::new(
            outbox.clone(),
            read_models.clone(),
            config.rules.clone(),
            config.clock.clone(),
            &config.keyspace,
        )
        .await?,
    );
    let checkpoints = Checkpoints::new(session.clone(), &config.keyspace).await?;
    let consumer = |group: &str, topics: Vec<String>| {
        ConsumerOptions::new(config.infra.kafka_brokers.clone(), group.to_owned(), topics)
    };

    let sweeper = tokio::spawn(Sweeper::new(outbox).run(shutdown.clone()));
    let reacting = tokio::spawn(
        ConsumerRunner::new(
            consumer(
                &config.reaction_group,
                vec![
                    config.referral_topic.clone(),
                    config.activation_topic.clone(),
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
            Projector(read_models),
            checkpoints,
            producer.clone(),
            shutdown.clone(),
        )?
        .run(),
    );
    let jobs =
        crate::jobs::start(&config, session, app.clone(), producer, shutdown.clone()).await?;

    let hasher = IdentityHasher::new(config.identity_secret.clone());
    let routes = tonic::service::Routes::new(PayoutsServiceServer::new(Api::new(app, hasher)));
    let served = scanloop_service::serve::<PayoutsServiceServer<Api>>(
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
    jobs.finish().await?;
    served
}
