//! ScyllaDB/Cassandra plumbing shared by every Scanloop process: connecting, the explicit schema
//! migration step and the schema check a service makes at start-up, and consumer checkpoints.
//!
//! Only CQL that both ScyllaDB and Apache Cassandra accept is used: no materialized views, no
//! secondary indexes.

pub mod checkpoints;
pub mod migrate;
pub mod paging;
pub mod session;

pub use checkpoints::Checkpoints;
pub use migrate::{Migration, SchemaError, migrate, require_schema};
pub use session::{connect, is_valid_identifier};

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
