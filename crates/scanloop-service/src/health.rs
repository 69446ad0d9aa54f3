//! A health check that tells the truth: a service that cannot reach Cassandra or Kafka answers
//! commands with UNAVAILABLE, so it must not be reported SERVING (Kubernetes readiness would keep
//! routing callers to it). Every few seconds one cheap probe per dependency runs, each bounded by
//! a short timeout; the result sets the standard `grpc.health.v1` status of the service's name
//! and of the server as a whole (""). A separate name, [`LIVENESS`], stays SERVING while the
//! process runs: restarting a pod does not bring the database back.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use scanloop_bus::EventProducer;
use scylla::client::session::Session;
use scylla::statement::Statement;
use tokio_util::sync::CancellationToken;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

/// The health service name a liveness probe asks: SERVING whenever the server answers at all.
pub const LIVENESS: &str = "liveness";

/// What a service depends on, and how often and how patiently to probe it.
#[derive(Clone)]
pub struct HealthChecks {
    session: Arc<Session>,
    producer: EventProducer,
    topic: String,
    interval: Duration,
    timeout: Duration,
}

impl HealthChecks {
    /// Probes Cassandra through `session` and Kafka through `producer` (asking for `topic`, the
    /// service's own event topic) every `interval`, each probe given at most `timeout`.
    pub fn new(
        session: Arc<Session>,
        producer: EventProducer,
        topic: impl Into<String>,
        interval: Duration,
        timeout: Duration,
    ) -> Self {
        Self {
            session,
            producer,
            topic: topic.into(),
            interval,
            timeout,
        }
    }

    /// One round of probes: the dependencies that failed, each with the reason.
    pub async fn probe(&self) -> Unreachable {
        let (cassandra, kafka) = tokio::join!(self.probe_cassandra(), self.probe_kafka());
        let mut failed = Unreachable::default();
        if let Err(reason) = cassandra {
            failed.0.insert("cassandra", reason);
        }
        if let Err(reason) = kafka {
            failed.0.insert("kafka", reason);
        }
        failed
    }

    async fn probe_cassandra(&self) -> Result<(), String> {
        // A one-row read of the node's own table: no keyspace, no partition of ours touched.
        let mut statement = Statement::new("SELECT release_version FROM system.local");
        statement.set_request_timeout(Some(self.timeout));
        // The outer timeout also covers waiting for a connection, which the driver's does not.
        match tokio::time::timeout(self.timeout, self.session.query_unpaged(statement, &[])).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(error)) => Err(error.to_string()),
            Err(_) => Err(format!("no answer within {:?}", self.timeout)),
        }
    }

    async fn probe_kafka(&self) -> Result<(), String> {
        self.producer
            .probe(&self.topic, self.timeout)
            .await
            .map_err(|error| error.to_string())
    }
}

/// The dependencies a probe round could not reach, by name, with the reason.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Unreachable(BTreeMap<&'static str, String>);

impl Unreachable {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn names(&self) -> Vec<&'static str> {
        self.0.keys().copied().collect()
    }

    pub fn status(&self) -> ServingStatus {
        if self.is_empty() {
            ServingStatus::Serving
        } else {
            ServingStatus::NotServing
        }
    }
}

/// Remembers which dependencies were unreachable after the last round, so that a log line is
/// written when that set changes, not on every round while something stays down.
#[derive(Debug, Default)]
struct Transitions {
    last: Option<Vec<&'static str>>,
}

impl Transitions {
    /// True when `now` differs from the previous round (or this is the first round).
    fn changed(&mut self, now: &Unreachable) -> bool {
        let names = now.names();
        if self.last.as_ref() == Some(&names) {
            return false;
        }
        self.last = Some(names);
        true
    }
}

/// Sets `service` and "" on `reporter` from one probe round, logging changes.
async fn report(
    reporter: &HealthReporter,
    service: &str,
    unreachable: &Unreachable,
    transitions: &mut Transitions,
) {
    let status = unreachable.status();
    reporter.set_service_status(service, status).await;
    reporter.set_service_status("", status).await;
    if transitions.changed(unreachable) {
        if unreachable.is_empty() {
            tracing::info!(service, "cassandra and kafka reachable: health SERVING");
        } else {
            for (dependency, reason) in &unreachable.0 {
                tracing::warn!(
                    service,
                    dependency,
                    reason = reason.as_str(),
                    "dependency unreachable: health NOT_SERVING"
                );
            }
        }
    }
}

/// Probes once and reports, so the server's first answer is already true; then returns the task
/// that keeps probing every interval until `shutdown`, when everything turns NOT_SERVING (the
/// server is draining and takes no new work).
pub(crate) async fn start(
    checks: HealthChecks,
    reporter: HealthReporter,
    service: &'static str,
    shutdown: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    reporter
        .set_service_status(LIVENESS, ServingStatus::Serving)
        .await;
    let mut transitions = Transitions::default();
    report(&reporter, service, &checks.probe().await, &mut transitions).await;
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(checks.interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticks.tick().await; // the first tick is immediate; that round just ran
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = ticks.tick() => {}
            }
            let unreachable = tokio::select! {
                _ = shutdown.cancelled() => break,
                unreachable = checks.probe() => unreachable,
            };
            report(&reporter, service, &unreachable, &mut transitions).await;
        }
        reporter
            .set_service_status(service, ServingStatus::NotServing)
            .await;
        reporter
            .set_service_status("", ServingStatus::NotServing)
            .await;
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unreachable(names: &[&'static str]) -> Unreachable {
        Unreachable(
            names
                .iter()
                .map(|name| (*name, "connection refused".to_owned()))
                .collect(),
        )
    }

    #[test]
    fn any_unreachable_dependency_means_not_serving() {
        assert_eq!(unreachable(&[]).status(), ServingStatus::Serving);
        assert_eq!(
            unreachable(&["cassandra"]).status(),
            ServingStatus::NotServing
        );
        assert_eq!(unreachable(&["kafka"]).status(), ServingStatus::NotServing);
    }

    #[test]
    fn a_change_is_reported_once_not_on_every_round() {
        let mut transitions = Transitions::default();
        let rounds = [
            (&[][..], true), // the first round is always news
            (&[][..], false),
            (&["cassandra"][..], true),
            (&["cassandra"][..], false),
            (&["cassandra", "kafka"][..], true),
            (&["kafka"][..], true),
            (&[][..], true),
            (&[][..], false),
        ];
        for (round, (names, expected)) in rounds.iter().enumerate() {
            assert_eq!(
                transitions.changed(&unreachable(names)),
                *expected,
                "round {round}: {names:?}"
            );
        }
    }

    #[test]
    fn a_new_reason_for_the_same_outage_is_not_news() {
        let mut transitions = Transitions::default();
        assert!(transitions.changed(&unreachable(&["cassandra"])));
        let mut other_reason = unreachable(&["cassandra"]);
        other_reason
            .0
            .insert("cassandra", "no answer within 2s".to_owned());
        assert!(!transitions.changed(&other_reason));
    }
}
