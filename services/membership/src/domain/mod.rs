//! The membership domain: pure rules, no I/O.

pub mod events;
pub mod identity;
pub mod member;
pub mod rules;
pub mod tiers;
pub mod upcast;

pub use events::MembershipEvent;

pub use scanloop_eventstore::Rejection;
