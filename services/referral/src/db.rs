//! Named prepared statements (shared with the other services).

pub use scanloop_storage::statements::Db;
