//! The payouts domain: pure rules, no I/O.
//!
//! - [`money`]: what a commission is worth, and the rounding rule;
//! - [`ledger`]: the accounts and the balanced postings every money movement makes;
//! - [`plan`]: commission plans (two levels at most, by construction) and their validation;
//! - [`sale`]: one sale's commissions from accrual through vesting, returns and settlement;
//! - [`settlement`]: settlement batches, one open per brand, and how a batch nets and pays.

pub mod events;
pub mod ledger;
pub mod money;
pub mod plan;
pub mod sale;
pub mod settlement;

pub use events::PayoutsEvent;
pub use scanloop_eventstore::Rejection;
