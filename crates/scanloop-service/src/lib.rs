//! What every Scanloop gRPC service shares (and nothing of their domains):
//! - [`ServiceError`], a small closed set of errors, each mapped once to a gRPC status code;
//! - [`shutdown_signal`] and [`serve`]: a tonic server with the standard health service and
//!   server reflection that drains in-flight calls on SIGTERM or Ctrl-C;
//! - [`Handler`]: one shape for every RPC handler (request checks, command context, statuses);
//! - [`HealthChecks`]: the probes of Cassandra and Kafka behind that health service;
//! - [`access`]: who may call what (tokens, roles, brands, abuse limits), enforced once in front
//!   of every service.

pub mod access;
pub mod config;
pub mod context;
pub mod error;
pub mod handler;
pub mod health;
pub mod jobs;
pub mod platform;
pub mod reaction;
pub mod server;
pub mod trace;
pub mod validate;

pub use access::ServerSettings;
pub use config::{ServiceConfig, ServiceNames};
pub use context::RequestContext;
pub use error::ServiceError;
pub use handler::Handler;
pub use health::HealthChecks;
pub use platform::{HasServiceConfig, Platform, run_process};
pub use server::{serve, shutdown_signal};
