//! The errors a service returns to its callers, and their gRPC codes.

use scanloop_eventstore::{AppendError, ExecuteError, Rejection};
use tonic::{Code, Status};

/// A closed set: every failure a caller can see is one of these, with a message saying what to
/// do. Messages are short and lowercase and never carry personal data.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// The request itself is wrong; retrying it unchanged will fail again.
    #[error("{0}")]
    InvalidArgument(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    AlreadyExists(String),
    /// The request is valid but the entity is not in a state that allows it.
    #[error("{0}")]
    FailedPrecondition(String),
    /// Lost a race with concurrent writers too often; retrying is safe.
    #[error("{0}")]
    Aborted(String),
    /// A dependency (database, broker) is away; retrying later is safe.
    #[error("{0}")]
    Unavailable(String),
    /// A bug or corrupt data: logged in full, reported to the caller without detail.
    #[error("internal error: {0}")]
    Internal(String),
}

impl ServiceError {
    pub fn code(&self) -> Code {
        match self {
            Self::InvalidArgument(_) => Code::InvalidArgument,
            Self::NotFound(_) => Code::NotFound,
            Self::AlreadyExists(_) => Code::AlreadyExists,
            Self::FailedPrecondition(_) => Code::FailedPrecondition,
            Self::Aborted(_) => Code::Aborted,
            Self::Unavailable(_) => Code::Unavailable,
            Self::Internal(_) => Code::Internal,
        }
    }

    pub fn invalid(message: impl Into<String>) -> Self {
        Self::InvalidArgument(message.into())
    }

    /// A read model or table that did not answer: logged, and the caller told to retry.
    pub fn read_models_unavailable(error: scanloop_storage::DbError) -> Self {
        tracing::warn!(%error, "read model unavailable");
        Self::Unavailable("read models unavailable; retry later".into())
    }

    /// A listing's failure: a page token this service did not issue is the caller's mistake; a
    /// read model that did not answer is retried later.
    pub fn from_page(error: scanloop_storage::paging::PageError) -> Self {
        match error {
            scanloop_storage::paging::PageError::BadToken => Self::invalid(error.to_string()),
            scanloop_storage::paging::PageError::Db(e) => Self::read_models_unavailable(e),
        }
    }

    /// Maps a store failure that is not the domain's own rejection.
    pub fn from_store(error: AppendError) -> Self {
        match error {
            AppendError::Conflict { stream_id, .. } => {
                Self::Aborted(format!("{stream_id} changed concurrently; retry"))
            }
            AppendError::Invalid { reason, .. } => Self::Internal(reason),
            AppendError::Unavailable(error) => {
                // The driver's error says why: refused, no connection, or no answer within the
                // request timeout (SCANLOOP_CQL_REQUEST_TIMEOUT_MS) from a frozen database.
                tracing::warn!(%error, "event store unavailable; answering UNAVAILABLE");
                Self::Unavailable("event store unavailable; retry later".into())
            }
        }
    }
}

impl<E: Into<ServiceError>> From<ExecuteError<E>> for ServiceError {
    fn from(error: ExecuteError<E>) -> Self {
        match error {
            ExecuteError::Rejected(rejection) => rejection.into(),
            ExecuteError::Contention { stream_id } => Self::Aborted(format!(
                "{stream_id} is under heavy concurrent change; retry"
            )),
            ExecuteError::Corrupt {
                stream_id,
                version,
                reason,
            } => {
                tracing::error!(stream_id, version, reason, "corrupt event stream");
                Self::Internal("stored events cannot be read".into())
            }
            ExecuteError::RequestReused { request_id } => Self::InvalidArgument(format!(
                "request id {request_id} already used for a different request; \
                 send a new request id for a new request"
            )),
            ExecuteError::Store(store) => Self::from_store(store),
        }
    }
}

impl From<Rejection> for ServiceError {
    fn from(rejection: Rejection) -> Self {
        match rejection {
            Rejection::Invalid(m) => Self::InvalidArgument(m),
            Rejection::NotFound(m) => Self::NotFound(m),
            Rejection::AlreadyExists(m) => Self::AlreadyExists(m),
            Rejection::FailedPrecondition(m) => Self::FailedPrecondition(m),
        }
    }
}

impl From<ServiceError> for Status {
    fn from(error: ServiceError) -> Self {
        if let ServiceError::Internal(detail) = &error {
            tracing::error!(detail, "internal error");
            return Status::internal("internal error");
        }
        Status::new(error.code(), error.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_error_has_its_code_and_internal_details_stay_inside() {
        let status: Status = ServiceError::AlreadyExists("code activated at x".into()).into();
        assert_eq!(status.code(), Code::AlreadyExists);
        assert_eq!(status.message(), "code activated at x");
        let status: Status = ServiceError::Internal("row 7 has a null".into()).into();
        assert_eq!(status.code(), Code::Internal);
        assert!(!status.message().contains("row 7"));
    }
}
