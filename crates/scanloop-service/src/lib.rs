//! What every Scanloop gRPC service shares (and nothing of their domains):
//! - [`ServiceError`], a small closed set of errors, each mapped once to a gRPC status code;
//! - [`shutdown_signal`] and [`serve`]: a tonic server with the standard health service and
//!   server reflection that drains in-flight calls on SIGTERM or Ctrl-C;
//! - [`HealthChecks`]: the probes of Cassandra and Kafka behind that health service;
//! - [`access`]: who may call what (tokens, roles, brands, abuse limits), enforced once in front
//!   of every service.

pub mod access;
pub mod config;
pub mod context;
pub mod error;
pub mod health;
pub mod jobs;
pub mod memory;
pub mod platform;
pub mod reaction;
pub mod server;
pub mod trace;
pub mod validate;

pub use access::ServerSettings;
pub use config::{ServiceConfig, ServiceNames};
pub use context::RequestContext;
pub use error::ServiceError;
pub use health::HealthChecks;
pub use platform::{HasServiceConfig, Platform, run_process};
pub use server::{serve, shutdown_signal};

/// The allocator every Scanloop process installs in its `main.rs` (`#[global_allocator]`):
/// mimalloc. Under load the services spent about 15% of their CPU in glibc's malloc and free
/// (issue 10's profile of the activation service: `_int_malloc`, `_int_free`,
/// `malloc_consolidate`); each request allocates and frees many small buffers across threads.
///
/// With the `system-allocator` feature it is the C library's malloc instead, so that a malloc
/// profiler preloaded into the process (heaptrack, `scripts/profile-heap`) sees every
/// allocation: mimalloc takes its memory from the kernel directly.
#[cfg(not(feature = "system-allocator"))]
pub use mimalloc::MiMalloc as Allocator;
#[cfg(feature = "system-allocator")]
pub use std::alloc::System as Allocator;
