//! CQL statements each program sent: Cassandra's per-connection request counts
//! (`system_views.clients`), summed by the application name each program's driver announces at
//! connection (`scanloop_storage::connect` sets it to the executable's name).
//!
//! These are the statements as the services send them (a conditional write is one); the
//! table counts (`table_ops`) are the node's local work (a conditional write shows there
//! as several Paxos reads and writes). A connection that closes between two samples takes its
//! count with it, so the figures are for services that stay up through a run.

use std::collections::BTreeMap;
use std::sync::Arc;

use scylla::client::session::Session;

/// The services, by the name their executables announce, and how they are printed.
pub(crate) const SERVICES: [(&str, &str); 4] = [
    ("scanloop-activation", "activation"),
    ("scanloop-membership", "membership"),
    ("scanloop-referral", "referral"),
    ("scanloop-payouts", "payouts"),
];

/// Cumulative requests per announced application name.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct ClientRequests(BTreeMap<String, u64>);

impl ClientRequests {
    /// The node's counts now, or `None` when it does not expose them (not Cassandra 4+).
    pub(crate) async fn sample(session: &Arc<Session>) -> Option<ClientRequests> {
        let rows = session
            .query_unpaged(
                "SELECT client_options, request_count FROM system_views.clients",
                (),
            )
            .await
            .ok()?
            .into_rows_result()
            .ok()?;
        let mut counts = BTreeMap::new();
        for row in rows
            .rows::<(Option<BTreeMap<String, String>>, Option<i64>)>()
            .ok()?
        {
            let (options, count) = row.ok()?;
            let name = options
                .and_then(|o| o.get("APPLICATION_NAME").cloned())
                .unwrap_or_else(|| "(unnamed)".to_owned());
            *counts.entry(name).or_insert(0) += count.unwrap_or(0).max(0) as u64;
        }
        Some(ClientRequests(counts))
    }

    /// What each program sent between `earlier` and this.
    pub(crate) fn since(&self, earlier: &ClientRequests) -> ClientRequests {
        ClientRequests(
            self.0
                .iter()
                .map(|(name, &after)| {
                    let before = earlier.0.get(name).copied().unwrap_or(0);
                    (name.clone(), after.saturating_sub(before))
                })
                .collect(),
        )
    }

    /// The four services' statements together.
    pub(crate) fn services_total(&self) -> u64 {
        SERVICES
            .iter()
            .map(|(name, _)| self.0.get(*name).copied().unwrap_or(0))
            .sum()
    }

    /// "activation 40.1 + membership 20.0 + referral 60.2 + payouts 50.3 = 170.6": the
    /// services' statements divided by `per` (operations, or seconds).
    pub(crate) fn by_service(&self, per: f64) -> String {
        if per <= 0.0 {
            return "-".into();
        }
        let parts: Vec<String> = SERVICES
            .iter()
            .map(|(name, short)| {
                let n = self.0.get(*name).copied().unwrap_or(0);
                format!("{short} {:.1}", n as f64 / per)
            })
            .collect();
        format!(
            "{} = {:.1}",
            parts.join(" + "),
            self.services_total() as f64 / per
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(rows: &[(&str, u64)]) -> ClientRequests {
        ClientRequests(rows.iter().map(|(n, c)| ((*n).to_owned(), *c)).collect())
    }

    #[test]
    fn statements_are_counted_per_service_between_two_samples() {
        let before = counts(&[("scanloop-activation", 100), ("scanloop", 7)]);
        let after = counts(&[
            ("scanloop-activation", 400),
            ("scanloop-referral", 200),
            ("scanloop-payouts", 100),
            ("scanloop", 9),
        ]);
        let run = after.since(&before);
        assert_eq!(run.services_total(), 600);
        assert_eq!(
            run.by_service(10.0),
            "activation 30.0 + membership 0.0 + referral 20.0 + payouts 10.0 = 60.0"
        );
        assert_eq!(run.by_service(0.0), "-");
    }
}
