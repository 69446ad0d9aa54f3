//! ScyllaDB/Cassandra plumbing shared by every Scanloop process: connecting, the explicit schema
//! migration step and the schema check a service makes at start-up, and consumer checkpoints.
//!
//! Only CQL that both ScyllaDB and Apache Cassandra accept is used: no materialized views, no
//! secondary indexes.

pub mod checkpoints;
pub mod migrate;
pub mod paging;
pub mod session;
pub mod shard;
pub mod statements;
pub mod written_once;

pub use checkpoints::Checkpoints;
pub use migrate::{Migration, SchemaError, latest_version, migrate, require_schema};
pub use session::{connect, is_valid_identifier};
pub use written_once::WrittenOnce;

/// A database error of any kind (connection, timeout, unexpected reply): callers treat it as
/// "the database is unavailable" and retry.
#[derive(Debug)]
pub struct DbError(Box<dyn std::error::Error + Send + Sync>);

impl std::fmt::Display for DbError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for DbError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.0.source()
    }
}

impl DbError {
    pub fn new<E: std::error::Error + Send + Sync + 'static>(error: E) -> Self {
        Self(Box::new(error))
    }
    pub fn msg(message: impl Into<String>) -> Self {
        Self(message.into().into())
    }

    /// False when repeating the same request cannot succeed: a statement the database refuses
    /// (syntax, invalid, unauthorised) or values and rows of the wrong type. Everything else
    /// (timeouts, unavailable replicas, lost connections, unknown errors) may pass.
    pub fn is_transient(&self) -> bool {
        use scylla::errors::{
            BadQuery, DbError as Refusal, ExecutionError, FirstRowError, IntoRowsResultError,
            MaybeFirstRowError, RequestAttemptError, RowsError, TypeCheckError,
        };
        let error: &(dyn std::error::Error + 'static) = &*self.0;
        if error.is::<TypeCheckError>()
            || error.is::<RowsError>()
            || error.is::<IntoRowsResultError>()
            || error.is::<MaybeFirstRowError>()
            || error.is::<FirstRowError>()
            || error.is::<scylla::deserialize::DeserializationError>()
            || error.is::<BadQuery>()
        {
            return false;
        }
        match error.downcast_ref::<ExecutionError>() {
            Some(ExecutionError::BadQuery(_)) => false,
            Some(ExecutionError::LastAttemptError(attempt)) => !matches!(
                attempt,
                RequestAttemptError::SerializationError(_)
                    | RequestAttemptError::CqlRequestSerialization(_)
                    | RequestAttemptError::DbError(
                        Refusal::SyntaxError
                            | Refusal::Invalid
                            | Refusal::Unauthorized
                            | Refusal::AlreadyExists { .. }
                            | Refusal::ConfigError,
                        _
                    )
            ),
            _ => true,
        }
    }
}

/// Lets `?` turn any driver error into a [`DbError`].
macro_rules! db_error_from {
    ($($t:ty),* $(,)?) => {$(
        impl From<$t> for DbError {
            fn from(error: $t) -> Self {
                Self::new(error)
            }
        }
    )*};
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refused_statements_and_type_mismatches_are_permanent_the_rest_transient() {
        use scylla::errors::{DbError as Refusal, ExecutionError, RequestAttemptError};
        let refused = ExecutionError::LastAttemptError(RequestAttemptError::DbError(
            Refusal::Invalid,
            "no such column".into(),
        ));
        assert!(!DbError::from(refused).is_transient());
        let timeout = ExecutionError::RequestTimeout(std::time::Duration::from_secs(2));
        assert!(DbError::from(timeout).is_transient());
        let overloaded = ExecutionError::LastAttemptError(RequestAttemptError::DbError(
            Refusal::Overloaded,
            "busy".into(),
        ));
        assert!(DbError::from(overloaded).is_transient());
        assert!(DbError::msg("something unknown").is_transient());
    }
}

db_error_from!(
    scylla::errors::ExecutionError,
    scylla::errors::PrepareError,
    scylla::errors::PagerExecutionError,
    scylla::errors::NextRowError,
    scylla::errors::IntoRowsResultError,
    scylla::errors::RowsError,
    scylla::errors::MaybeFirstRowError,
    scylla::errors::FirstRowError,
    scylla::errors::TypeCheckError,
    scylla::errors::SchemaAgreementError,
);
