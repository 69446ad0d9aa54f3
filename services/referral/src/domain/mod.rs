//! The referral domain: pure rules, no I/O.

pub mod assist;
pub mod attribution;
pub mod device;
pub mod events;
pub mod link;
pub mod node;
pub mod rules;

pub use events::ReferralEvent;
pub use scanloop_eventstore::Rejection;
