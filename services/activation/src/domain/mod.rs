//! The activation domain: pure rules, no I/O. Commands are decided against aggregate state
//! (`decide` functions returning events), state is rebuilt by `apply`.

pub mod batch;
pub mod code;
pub mod events;
pub mod warranty;

pub use events::ActivationEvent;

/// Why the domain refuses a command. Each maps to one gRPC status in `grpc.rs`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    AlreadyExists(String),
    #[error("{0}")]
    FailedPrecondition(String),
}

impl From<Rejection> for scanloop_service::ServiceError {
    fn from(rejection: Rejection) -> Self {
        use scanloop_service::ServiceError as E;
        match rejection {
            Rejection::Invalid(m) => E::InvalidArgument(m),
            Rejection::NotFound(m) => E::NotFound(m),
            Rejection::AlreadyExists(m) => E::AlreadyExists(m),
            Rejection::FailedPrecondition(m) => E::FailedPrecondition(m),
        }
    }
}
