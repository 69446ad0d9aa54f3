//! What the referral service knows besides its own event streams: members as membership
//! announces them, buyers' activations waiting for their member, codes activation flagged, who
//! activated each code, every issued token, clicks, and recent sales per referrer and per store.
//! All writes are idempotent (keyed by the fact), so reactions may repeat them.
//!
//! One set of prepared statements over all of them ([`Directory`]); the statements, rows and
//! reads of each kind of fact are in a module named after what it holds: [`members`] (and whose each
//! identity is), [`parked_sales`], [`flagged_codes`], [`warranty_owners`], [`link_tokens`],
//! [`clicks`] and [`recent_sales`] (per referrer and per store).

use std::sync::Arc;

use scanloop_storage::statements::Db;
use scylla::client::session::Session;

pub mod clicks;
pub mod flagged_codes;
pub mod link_tokens;
pub mod members;
pub mod parked_sales;
pub mod recent_sales;
pub mod warranty_owners;

/// What referral knows besides its own streams, over one set of prepared statements (each
/// module's).
#[derive(Clone)]
pub struct Directory {
    db: Db,
}

impl Directory {
    pub async fn new(session: Arc<Session>, keyspace: &str) -> anyhow::Result<Self> {
        let statements = [
            members::STATEMENTS,
            parked_sales::STATEMENTS,
            flagged_codes::STATEMENTS,
            warranty_owners::STATEMENTS,
            link_tokens::STATEMENTS,
            clicks::STATEMENTS,
            recent_sales::STATEMENTS,
        ]
        .concat();
        Ok(Self {
            db: Db::prepare(session, keyspace, &statements).await?,
        })
    }
}
