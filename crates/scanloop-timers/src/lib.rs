//! Durable timers: "do this for that stream at that time", kept in the database and handled on
//! time by a job that may run in several instances at once and may crash at any point.
//!
//! - [`store::TimerStore::schedule`] records a due item in `timers`, partitioned by shard (of
//!   the stream) and hour of firing time; the same key and due time again is the same item.
//! - [`runner::TimerRunner`] handles the items whose time has come (woken by what this process
//!   schedules, with a slow safety pass for the rest), deletes
//!   each only after its handler succeeded, and keeps a forward-only cursor per shard so the
//!   tombstones of handled items are not read again.
//! - [`clock`]: the time every decision uses, injectable so a test can move it (or pass an
//!   explicit `as_of` to [`runner::TimerRunner::run_due`]).
//!
//! Items fire at least once. Handlers are idempotent: they run a command through the event
//! store's `Repository::execute`, which decides from the stream's state, and whose conditional
//! append lets one of two concurrent runs write.

pub mod clock;
mod pending;
pub mod runner;
pub mod schema;
pub mod store;

pub use clock::{Clock, SharedClock, ShiftedClock, SystemClock};
pub use runner::{RunReport, TimerError, TimerHandler, TimerRunner};
pub use store::{DueTimer, Timer, TimerStore};
