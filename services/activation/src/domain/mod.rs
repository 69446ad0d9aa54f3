//! The activation domain: pure rules, no I/O. Commands are decided against aggregate state
//! (`decide` functions returning events), state is rebuilt by `apply`.

pub mod batch;
pub mod code;
pub mod device;
pub mod events;
pub mod warranty;

pub use events::ActivationEvent;

pub use scanloop_eventstore::Rejection;
