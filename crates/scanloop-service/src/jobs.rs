//! A service's jobs on durable timers, started and stopped together: a consumer of the service's
//! own events that schedules timers from them (the scheduler), and the timer runner that hands
//! each item to its handler when due. Scheduling from stored events rather than in the command
//! path means a crash between an append and a timer write loses nothing: the outbox publishes
//! every stored event, and the consumer commits only after the timer is written.

use std::sync::Arc;
use std::time::Duration;

use scanloop_bus::{
    ConsumerOptions, ConsumerRunner, EventEnvelope, EventHandler, EventProducer, HandlerError,
};
use scanloop_eventstore::DomainEvent;
use scanloop_storage::Checkpoints;
use scanloop_timers::{SharedClock, Timer, TimerHandler, TimerRunner, TimerStore};
use scylla::client::session::Session;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// What a service's own events call for on the timers: the one part of scheduling each service
/// writes. Keys must name the reason, so a redelivered event schedules the same item.
pub trait TimersFor: Send + Sync + 'static {
    type Event: DomainEvent + Send;
    fn timer_for(&self, envelope: &EventEnvelope, event: &Self::Event) -> Option<Timer>;
    /// The event types `timer_for` schedules from; the scheduler passes by the rest unread.
    fn event_types(&self) -> &'static [&'static str];
}

/// The scheduler: a consumer of the service's own events that writes the timer each calls for.
struct Scheduler<T> {
    timers: TimerStore,
    policy: T,
}

impl<T: TimersFor> EventHandler for Scheduler<T> {
    async fn handle(&self, envelope: &EventEnvelope) -> Result<(), HandlerError> {
        let event = T::Event::decode(
            &envelope.event_type,
            envelope.schema_version,
            &envelope.payload,
        )
        .map_err(HandlerError::Poison)?;
        let Some(timer) = self.policy.timer_for(envelope, &event) else {
            return Ok(());
        };
        self.timers
            .schedule(&timer)
            .await
            .map_err(|e| HandlerError::Transient(e.into()))?;
        Ok(())
    }

    fn event_types(&self) -> Option<&'static [&'static str]> {
        Some(self.policy.event_types())
    }

    /// A timer is keyed by its reason, so scheduling it again is the same item; one scheduled
    /// again after it fired lies behind the runner's cursor (never read again) or fires again,
    /// and timer handlers decide from their stream's state (see `scanloop_timers`).
    fn idempotent_by_construction(&self, _event_type: &str) -> bool {
        true
    }
}

/// Where the jobs run and how often the runner looks for due items.
pub struct TimerJobsSettings {
    pub keyspace: String,
    pub kafka_brokers: String,
    /// The scheduler's consumer group and the topic it reads (the service's own).
    pub group: String,
    pub topic: String,
    pub clock: SharedClock,
    pub interval: Duration,
}

/// The running scheduler and timer runner.
pub struct TimerJobs {
    scheduling: JoinHandle<anyhow::Result<()>>,
    running: JoinHandle<()>,
}

impl TimerJobs {
    /// Starts both; they stop when `shutdown` is cancelled. Refuses to start (saying to run
    /// `scanloop migrate`) if the timers' schema is missing.
    pub async fn start<T: TimersFor, H: TimerHandler>(
        settings: TimerJobsSettings,
        session: Arc<Session>,
        schedule: T,
        handler: H,
        producer: EventProducer,
        shutdown: CancellationToken,
    ) -> anyhow::Result<Self> {
        let timers =
            TimerStore::new(session.clone(), &settings.keyspace, settings.clock.clone()).await?;
        let checkpoints = Checkpoints::new(session, &settings.keyspace).await?;
        let scheduling = tokio::spawn(
            ConsumerRunner::new(
                ConsumerOptions::new(settings.kafka_brokers, settings.group, vec![settings.topic]),
                Scheduler {
                    timers: timers.clone(),
                    policy: schedule,
                },
                checkpoints,
                producer,
                shutdown.clone(),
            )?
            .run(),
        );
        let running = tokio::spawn(
            TimerRunner::new(timers, handler, settings.clock)
                .with_interval(settings.interval)
                .run(shutdown),
        );
        Ok(Self {
            scheduling,
            running,
        })
    }

    /// Waits for both to stop.
    pub async fn finish(self) -> anyhow::Result<()> {
        self.running.await?;
        self.scheduling.await?
    }
}
