//! The referral service: share links and cards, attribution of a friend's activation to the
//! member whose link they came through, the two-level tree, fraud review, store credit and
//! assist campaigns.

pub mod card;
pub mod domain;
