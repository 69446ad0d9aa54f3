//! A service assembled once: what every Scanloop service runs besides its own domain. A service's
//! `server.rs` connects a [`Platform`], builds its application on the outbox, says which events
//! it reacts to, which read models it projects and which timer jobs it runs, and serves its gRPC
//! API; the platform owns the session, the producer, the outbox and its sweeper, the consumers,
//! the health probes, the gate, telemetry layers and the graceful shutdown of all of them.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use scanloop_bus::{ConsumerOptions, ConsumerRunner, EventHandler, EventProducer};
use scanloop_eventstore::{EventStore, Outbox, Projection, Projector, Sweeper};
use scanloop_storage::Checkpoints;
use scanloop_timers::{SharedClock, TimerHandler};
use scylla::client::session::Session;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tonic::body::Body;
use tonic::server::NamedService;

use crate::access::AccessTable;
use crate::config::ServiceConfig;
use crate::health::HealthChecks;
use crate::jobs::{TimerJobs, TimerJobsSettings, TimersFor};

/// How long a service waits for Cassandra at start-up, and Kafka's producer for a broker.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(60);
const PRODUCER_TIMEOUT: Duration = Duration::from_secs(10);

/// The connected platform of one service, and the tasks it runs until shutdown.
pub struct Platform {
    pub session: Arc<Session>,
    pub producer: EventProducer,
    /// Appends and publishes the service's events (its sweeper runs already).
    pub outbox: Outbox,
    checkpoints: Checkpoints,
    config: ServiceConfig,
    shutdown: CancellationToken,
    tasks: Vec<(&'static str, JoinHandle<anyhow::Result<()>>)>,
}

impl Platform {
    /// Connects to Cassandra and Kafka, checks the event store's schema (refusing to start,
    /// saying to run `scanloop migrate`, when it is missing) and starts the outbox sweeper.
    pub async fn connect(
        config: &ServiceConfig,
        shutdown: CancellationToken,
    ) -> anyhow::Result<Self> {
        let infra = &config.infra;
        let session = scanloop_storage::session::connect_with_request_timeout(
            &infra.cql_nodes,
            CONNECT_TIMEOUT,
            infra.cql_request_timeout,
        )
        .await?;
        let store = EventStore::new(session.clone(), &config.keyspace).await?;
        let producer = EventProducer::new(&infra.kafka_brokers, PRODUCER_TIMEOUT)?;
        let outbox = Outbox::new(
            store,
            &config.keyspace,
            producer.clone(),
            config.topic.clone(),
        )
        .await?;
        let checkpoints = Checkpoints::new(session.clone(), &config.keyspace).await?;
        let mut platform = Self {
            session,
            producer,
            outbox: outbox.clone(),
            checkpoints,
            config: config.clone(),
            shutdown: shutdown.clone(),
            tasks: Vec::new(),
        };
        platform.spawn("outbox sweeper", async move {
            Sweeper::new(outbox).run(shutdown).await;
            Ok(())
        });
        Ok(platform)
    }

    /// Runs the service's reactions, `handler`, on every event of `topics`, as its reaction
    /// group (one group over several topics: each stream has its own lane, so one slow stream
    /// holds back no other).
    pub fn react<H: EventHandler>(&mut self, topics: &[&str], handler: H) -> anyhow::Result<()> {
        let group = self.config.reaction_group.clone();
        self.consume(&group, topics, handler)
    }

    /// Projects the service's own events into `read_models`, as its projection group.
    pub fn project<P: Projection>(&mut self, read_models: P) -> anyhow::Result<()> {
        let group = self.config.projection_group.clone();
        let topic = self.config.topic.clone();
        self.consume(&group, &[&topic], Projector(read_models))
    }

    fn consume<H: EventHandler>(
        &mut self,
        group: &str,
        topics: &[&str],
        handler: H,
    ) -> anyhow::Result<()> {
        let runner = ConsumerRunner::new(
            ConsumerOptions::new(
                self.config.infra.kafka_brokers.clone(),
                group.to_owned(),
                topics.iter().map(|topic| (*topic).to_owned()).collect(),
            ),
            handler,
            self.checkpoints.clone(),
            self.producer.clone(),
            self.shutdown.clone(),
        )?;
        self.spawn("consumer", runner.run());
        Ok(())
    }

    /// Starts jobs on durable timers: `scheduler` (given the timer store) reads the service's
    /// own events as group `group` and schedules; `handler` runs each item when due.
    pub async fn timer_jobs<T: TimersFor, H: TimerHandler>(
        &mut self,
        group: &str,
        clock: SharedClock,
        interval: Duration,
        schedule: T,
        handler: H,
    ) -> anyhow::Result<()> {
        let settings = TimerJobsSettings {
            keyspace: self.config.keyspace.clone(),
            kafka_brokers: self.config.infra.kafka_brokers.clone(),
            group: group.to_owned(),
            topic: self.config.topic.clone(),
            clock,
            interval,
        };
        let jobs = TimerJobs::start(
            settings,
            self.session.clone(),
            schedule,
            handler,
            self.producer.clone(),
            self.shutdown.clone(),
        )
        .await?;
        self.spawn("timer jobs", jobs.finish());
        Ok(())
    }

    fn spawn(
        &mut self,
        name: &'static str,
        task: impl Future<Output = anyhow::Result<()>> + Send + 'static,
    ) {
        self.tasks.push((name, tokio::spawn(task)));
    }

    /// Serves `service` on `listener` behind the access gate (`access`, and the server settings
    /// of the service's configuration) with health and reflection until shutdown, then stops every task the platform started and waits for
    /// them: in-flight calls finish, consumers commit what they finished.
    pub async fn serve<S>(
        self,
        listener: tokio::net::TcpListener,
        service: S,
        access: AccessTable,
    ) -> anyhow::Result<()>
    where
        S: tower::Service<http::Request<Body>, Response = http::Response<Body>, Error = Infallible>
            + NamedService
            + Clone
            + Send
            + Sync
            + 'static,
        S::Future: Send + 'static,
    {
        let health = HealthChecks::new(
            self.session.clone(),
            self.producer.clone(),
            self.config.topic.clone(),
            self.config.infra.health_check_interval,
            self.config.infra.cql_request_timeout,
        );
        let routes = tonic::service::Routes::new(service);
        let served = crate::serve::<S>(
            listener,
            routes,
            health,
            access,
            &self.config.server,
            self.shutdown.clone(),
        )
        .await;
        self.shutdown.cancel();
        let mut failed = None;
        for (name, task) in self.tasks {
            let outcome = match task.await {
                Ok(outcome) => outcome,
                Err(join) => Err(anyhow::anyhow!("{name} panicked: {join}")),
            };
            if let Err(error) = outcome {
                tracing::error!(
                    task = name,
                    error = format!("{error:#}"),
                    "stopped with an error"
                );
                failed.get_or_insert(error.context(name));
            }
        }
        // Commands and reactions have stopped; their events' publications finish now rather
        // than after the next start's sweep.
        if !self.outbox.drain(std::time::Duration::from_secs(10)).await {
            tracing::warn!(
                "publications still in flight at shutdown; the sweeper will finish them"
            );
        }
        served?;
        failed.map_or(Ok(()), Err)
    }
}

/// A service's configuration: the settings every service has, and its own.
pub trait HasServiceConfig {
    fn service(&self) -> &ServiceConfig;
}

/// A service process: telemetry named `name`, configuration from the environment (refusing to
/// start on a bad one, in the log stream too), the listener at its address, shutdown on SIGTERM
/// or Ctrl-C, the process's memory settings ([`scanloop_alloc`]: once per process, however many
/// servers a test runs in one), then `run`. What each service's `main` is.
pub async fn run_process<C: HasServiceConfig, F>(
    name: &'static str,
    config: impl FnOnce() -> Result<C, scanloop_config::ConfigError>,
    run: impl FnOnce(C, tokio::net::TcpListener, CancellationToken) -> F,
) -> anyhow::Result<()>
where
    F: Future<Output = anyhow::Result<()>>,
{
    let huge_pages_off = scanloop_alloc::keep_huge_pages_off();
    let _telemetry = scanloop_telemetry::init(name)?;
    if let Err(error) = huge_pages_off {
        tracing::warn!(%error, "could not turn transparent huge pages off: RSS may grow by whole 2 MiB pages");
    }
    let config = config().inspect_err(|error| {
        tracing::error!(%error, "invalid configuration: refusing to start");
    })?;
    let listener = tokio::net::TcpListener::bind(&config.service().grpc_addr).await?;
    let shutdown = CancellationToken::new();
    tokio::spawn(crate::shutdown_signal(shutdown.clone()));
    let trimmer_shutdown = shutdown.clone();
    tokio::spawn(async move {
        if let Err(error) = scanloop_alloc::trim_until(trimmer_shutdown).await {
            tracing::warn!(%error, "the malloc trimmer stopped");
        }
    });
    run(config, listener, shutdown).await
}
