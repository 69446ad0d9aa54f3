//! Configuration from environment variables, each with a documented default.
//!
//! Every Scanloop process reads the same [`Infra`] settings (where the database and the brokers
//! are); services add their own on top with [`var`]. A value that does not parse is an error that
//! names the variable, never a silent fallback to the default.

use std::fmt;
use std::str::FromStr;

#[derive(Debug, thiserror::Error)]
#[error("environment variable {name}={value:?} is invalid: {reason}")]
pub struct ConfigError {
    pub name: &'static str,
    pub value: String,
    pub reason: String,
}

/// Reads `name` from the environment, or `default` when it is unset or empty.
pub fn var<T>(name: &'static str, default: T) -> Result<T, ConfigError>
where
    T: FromStr,
    T::Err: fmt::Display,
{
    match std::env::var(name) {
        Ok(value) if !value.trim().is_empty() => {
            value.trim().parse().map_err(|e: T::Err| ConfigError {
                name,
                value,
                reason: e.to_string(),
            })
        }
        _ => Ok(default),
    }
}

/// A comma-separated list, e.g. `SCANLOOP_CQL_NODES=10.0.0.1:9042,10.0.0.2:9042`.
pub fn list(name: &'static str, default: &str) -> Vec<String> {
    let raw = std::env::var(name)
        .ok()
        .filter(|v| !v.trim().is_empty())
        .unwrap_or_else(|| default.to_owned());
    raw.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

/// A value that must never be printed: `Debug` and `Display` show `[redacted]`.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret<T>(T);

impl<T> Secret<T> {
    pub fn new(value: T) -> Self {
        Self(value)
    }
    /// The secret itself; the name makes every use easy to find in review.
    pub fn expose(&self) -> &T {
        &self.0
    }
}

impl<T> fmt::Debug for Secret<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl<T> fmt::Display for Secret<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl<T: FromStr> FromStr for Secret<T> {
    type Err = T::Err;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        s.parse().map(Secret)
    }
}

/// One documented variable: what `scanloop config` prints and the README lists.
pub struct VarDoc {
    pub name: &'static str,
    pub default: &'static str,
    pub meaning: &'static str,
}

/// The variables every Scanloop process reads.
pub const INFRA_VARS: &[VarDoc] = &[
    VarDoc {
        name: "SCANLOOP_CQL_NODES",
        default: "127.0.0.1:9042",
        meaning: "ScyllaDB/Cassandra contact points, comma-separated",
    },
    VarDoc {
        name: "SCANLOOP_KAFKA_BROKERS",
        default: "127.0.0.1:9092",
        meaning: "Kafka bootstrap servers, comma-separated",
    },
    VarDoc {
        name: "SCANLOOP_REPLICATION_FACTOR",
        default: "1",
        meaning: "replication factor for keyspaces and topics that `scanloop migrate` creates",
    },
    VarDoc {
        name: "SCANLOOP_TOPIC_PARTITIONS",
        default: "6",
        meaning: "partitions of each event topic that `scanloop migrate` creates",
    },
    VarDoc {
        name: "SCANLOOP_LOG_FORMAT",
        default: "text",
        meaning: "`text` or `json` log lines on stderr (level filter: RUST_LOG, default info)",
    },
    VarDoc {
        name: "OTEL_EXPORTER_OTLP_ENDPOINT",
        default: "(unset: no export)",
        meaning: "when set (or OTEL_TRACES_EXPORTER=otlp), traces go to this OTLP/gRPC endpoint",
    },
];

/// Where the shared infrastructure is.
#[derive(Debug, Clone)]
pub struct Infra {
    pub cql_nodes: Vec<String>,
    pub kafka_brokers: String,
    pub replication_factor: u16,
    pub topic_partitions: u16,
}

impl Infra {
    pub fn from_env() -> Result<Self, ConfigError> {
        Ok(Self {
            cql_nodes: list("SCANLOOP_CQL_NODES", "127.0.0.1:9042"),
            kafka_brokers: list("SCANLOOP_KAFKA_BROKERS", "127.0.0.1:9092").join(","),
            replication_factor: var("SCANLOOP_REPLICATION_FACTOR", 1)?,
            topic_partitions: var("SCANLOOP_TOPIC_PARTITIONS", 6)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_never_prints() {
        let s: Secret<String> = "hunter2".parse().unwrap();
        assert_eq!(format!("{s:?} {s}"), "[redacted] [redacted]");
        assert_eq!(s.expose(), "hunter2");
    }

    #[test]
    fn unset_var_gives_default_and_bad_value_names_the_variable() {
        assert_eq!(var::<u16>("SCANLOOP_TEST_SURELY_UNSET", 7).unwrap(), 7);
        // SAFETY: this test alone touches this variable.
        unsafe { std::env::set_var("SCANLOOP_TEST_BAD_NUMBER", "seven") };
        let err = var::<u16>("SCANLOOP_TEST_BAD_NUMBER", 7).unwrap_err();
        assert!(
            err.to_string().contains("SCANLOOP_TEST_BAD_NUMBER"),
            "{err}"
        );
    }

    #[test]
    fn list_splits_and_trims() {
        assert_eq!(
            list("SCANLOOP_TEST_SURELY_UNSET", "a:1, b:2,,"),
            vec!["a:1".to_owned(), "b:2".to_owned()]
        );
    }
}
