//! Wires the activation service: store, outbox, sweeper, projector, the reaction to referral
//! events, gRPC server. Used by `main.rs` and by the integration tests (which start it on port 0
//! with a fresh keyspace).

use std::sync::Arc;
use std::time::Duration;

use scanloop_bus::{ConsumerOptions, ConsumerRunner, EventProducer};
use scanloop_eventstore::{EventStore, Outbox, Projector, Sweeper};
use scanloop_pii::IdentityHasher;
use scanloop_proto::activation::v1::activation_service_server::ActivationServiceServer;
use scanloop_service::HealthChecks;
use scanloop_storage::Checkpoints;
use tokio_util::sync::CancellationToken;

use crate::app::Activation;
use crate::config::Config;
use crate::domain::code::CodeSigner;
use crate::domain::warranty::{PurchaseLimits, Rules};
use crate::grpc::Api;
use crate::projections::ReadModels;
use crate::reaction::AssistReaction;

/// Runs the service on `listener` until `shutdown` is cancelled: the gRPC API, the outbox
/// sweeper, the read-model projector and the reaction to assist completions. Refuses to start
/// if the schema is missing.
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
    let topic = config.topic.clone();
    let outbox = Outbox::new(store, &config.keyspace, producer.clone(), topic.clone()).await?;

    let rules = Rules {
        return_window: chrono::Duration::days(config.return_window_days),
        suspicious_scan_window: chrono::Duration::minutes(config.suspicious_scan_minutes),
        purchase: PurchaseLimits {
            max_age: chrono::Duration::days(config.purchase_max_age_days),
            max_amount_fen: config.purchase_max_fen,
            max_amount_fen_by_brand: config.purchase_max_fen_by_brand.0.clone(),
            ..PurchaseLimits::default()
        },
        ..Rules::default()
    };
    let app = Arc::new(Activation::new(
        outbox.clone(),
        CodeSigner::new(config.code_secret.clone(), config.code_base_url.clone()),
        IdentityHasher::new(config.identity_secret.clone()),
        rules,
        read_models.clone(),
    ));

    let checkpoints = Checkpoints::new(session, &config.keyspace).await?;
    let sweeper = tokio::spawn(Sweeper::new(outbox).run(shutdown.clone()));
    let projector = ConsumerRunner::new(
        ConsumerOptions::new(
            config.infra.kafka_brokers.clone(),
            config.projection_group.clone(),
            vec![topic],
        ),
        Projector(read_models),
        checkpoints.clone(),
        producer.clone(),
        shutdown.clone(),
    )?;
    let projecting = tokio::spawn(projector.run());
    let reaction = ConsumerRunner::new(
        ConsumerOptions::new(
            config.infra.kafka_brokers.clone(),
            config.reaction_group.clone(),
            vec![config.referral_topic.clone()],
        ),
        AssistReaction::new(app.clone()),
        checkpoints,
        producer,
        shutdown.clone(),
    )?;
    let reacting = tokio::spawn(reaction.run());

    let routes = tonic::service::Routes::new(ActivationServiceServer::new(Api::new(app)));
    let served = scanloop_service::serve::<ActivationServiceServer<Api>>(
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
    projecting.await??;
    reacting.await??;
    served
}
