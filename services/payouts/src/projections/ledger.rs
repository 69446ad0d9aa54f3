//! The double-entry ledger: both sides of every posting an event makes (`ledger_entries`, by
//! account and time), the accounts that have entries (`ledger_accounts`) and how many postings
//! each event made (`ledger_events`); balances and statements are sums and ranges of entries.

use chrono::{DateTime, Utc};
use scanloop_bus::EventEnvelope;
use scanloop_proto::time::from_timestamp;
use scanloop_storage::DbError;
use scylla::statement::batch::{Batch, BatchType};

use super::ReadModels;
use crate::domain::PayoutsEvent;
use crate::domain::ledger;

pub(super) const STATEMENTS: &[(&str, &str)] = &[
    (
        "put_entry",
        "INSERT INTO {ks}.ledger_entries (brand_id, account, at, event_id, seq, amount_fen, \
         counterpart, event_type, commission_id, batch_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
    ),
    (
        "put_account",
        "INSERT INTO {ks}.ledger_accounts (brand_id, account) VALUES (?, ?)",
    ),
    (
        "put_ledger_event",
        "INSERT INTO {ks}.ledger_events (brand_id, event_id, postings) VALUES (?, ?, ?)",
    ),
    (
        "accounts",
        "SELECT account FROM {ks}.ledger_accounts WHERE brand_id = ?",
    ),
    (
        "balance",
        "SELECT SUM(amount_fen) FROM {ks}.ledger_entries WHERE brand_id = ? AND account = ?",
    ),
    (
        "balance_before",
        "SELECT SUM(amount_fen) FROM {ks}.ledger_entries \
         WHERE brand_id = ? AND account = ? AND at < ?",
    ),
    (
        "entries_between",
        "SELECT at, event_id, seq, amount_fen, counterpart, event_type, commission_id, \
         batch_id FROM {ks}.ledger_entries \
         WHERE brand_id = ? AND account = ? AND at >= ? AND at < ?",
    ),
    (
        "entries",
        "SELECT at, event_id, seq, amount_fen, counterpart, event_type, commission_id, \
         batch_id FROM {ks}.ledger_entries WHERE brand_id = ? AND account = ?",
    ),
    (
        "postings",
        "SELECT SUM(postings) FROM {ks}.ledger_events WHERE brand_id = ?",
    ),
];

/// Accounts a process remembers having listed (see [`scanloop_storage::WrittenOnce`]).
pub(super) const ACCOUNTS_REMEMBERED: usize = 100_000;

/// One side of a posting, as a statement line.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub account: String,
    pub at: DateTime<Utc>,
    pub event_id: String,
    pub seq: i32,
    pub amount_fen: i64,
    pub counterpart: String,
    pub event_type: String,
    pub commission_id: String,
    pub batch_id: String,
}

type EntryRow = (
    DateTime<Utc>,
    String,
    i32,
    i64,
    String,
    String,
    String,
    String,
);

/// The short event type name, e.g. "CommissionVested".
fn short_type(event_type: &str) -> &str {
    event_type.rsplit('.').next().unwrap_or(event_type)
}

impl ReadModels {
    /// Writes both sides of every posting of the event (one logged batch), then marks the
    /// event's postings counted. Keyed by event id and position: a replay rewrites the same rows.
    pub(super) async fn post(
        &self,
        envelope: &EventEnvelope,
        event: &PayoutsEvent,
    ) -> Result<(), DbError> {
        let postings = event.postings();
        if postings.is_empty() {
            return Ok(());
        }
        let brand = envelope.brand_id.as_str();
        let at = from_timestamp(envelope.occurred_at.as_ref()).unwrap_or_default();
        let event_type = short_type(&envelope.event_type);
        let (commission_id, batch_id) = refs(event);
        let statement = self.db.statement("put_entry")?;
        let mut batch = Batch::new(BatchType::Logged);
        let mut values = Vec::new();
        let mut accounts = Vec::new();
        for (i, posting) in postings.iter().enumerate() {
            let (Some(debit), Some(credit)) = (&posting.debit, &posting.credit) else {
                return Err(DbError::msg("a posting without both sides (a bug)"));
            };
            let (debit, credit) = (ledger::account_name(debit), ledger::account_name(credit));
            for (seq, account, amount, counterpart) in [
                (2 * i, &debit, posting.amount_fen, &credit),
                (2 * i + 1, &credit, -posting.amount_fen, &debit),
            ] {
                batch.append_statement(statement.clone());
                values.push((
                    brand.to_owned(),
                    account.clone(),
                    at,
                    envelope.event_id.clone(),
                    seq as i32,
                    amount,
                    counterpart.clone(),
                    event_type.to_owned(),
                    commission_id.clone(),
                    batch_id.clone(),
                ));
                accounts.push(account.clone());
            }
        }
        self.db
            .session()
            .batch(&batch, values)
            .await
            .map_err(DbError::new)?;
        accounts.sort();
        accounts.dedup();
        for account in accounts {
            self.record_account(brand, account).await?;
        }
        self.db
            .exec(
                "put_ledger_event",
                (brand, &envelope.event_id, postings.len() as i32),
            )
            .await
    }

    /// Lists the account among the brand's, once per process: the list only grows, so an
    /// account this process recorded needs no second write.
    async fn record_account(&self, brand: &str, account: String) -> Result<(), DbError> {
        let write = self.db.exec("put_account", (brand, account.as_str()));
        self.accounts_recorded
            .write_once((brand.to_owned(), account.clone()), write)
            .await
    }

    pub async fn accounts(&self, brand: &str) -> Result<Vec<String>, DbError> {
        Ok(self
            .db
            .rows::<(String,)>("accounts", (brand,))
            .await?
            .into_iter()
            .map(|(a,)| a)
            .collect())
    }

    pub async fn balance(&self, brand: &str, account: &str) -> Result<i64, DbError> {
        Ok(self
            .db
            .first::<(Option<i64>,)>("balance", (brand, account))
            .await?
            .and_then(|(sum,)| sum)
            .unwrap_or(0))
    }

    pub async fn balance_before(
        &self,
        brand: &str,
        account: &str,
        before: DateTime<Utc>,
    ) -> Result<i64, DbError> {
        Ok(self
            .db
            .first::<(Option<i64>,)>("balance_before", (brand, account, before))
            .await?
            .and_then(|(sum,)| sum)
            .unwrap_or(0))
    }

    fn entries_of(account: &str, rows: Vec<EntryRow>) -> Vec<Entry> {
        rows.into_iter()
            .map(
                |(
                    at,
                    event_id,
                    seq,
                    amount_fen,
                    counterpart,
                    event_type,
                    commission_id,
                    batch_id,
                )| {
                    Entry {
                        account: account.to_owned(),
                        at,
                        event_id,
                        seq,
                        amount_fen,
                        counterpart,
                        event_type,
                        commission_id,
                        batch_id,
                    }
                },
            )
            .collect()
    }

    pub async fn entries_between(
        &self,
        brand: &str,
        account: &str,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<Vec<Entry>, DbError> {
        let rows = self
            .db
            .rows::<EntryRow>("entries_between", (brand, account, from, to))
            .await?;
        Ok(Self::entries_of(account, rows))
    }

    pub async fn entries(&self, brand: &str, account: &str) -> Result<Vec<Entry>, DbError> {
        let rows = self
            .db
            .rows::<EntryRow>("entries", (brand, account))
            .await?;
        Ok(Self::entries_of(account, rows))
    }

    pub async fn postings(&self, brand: &str) -> Result<u64, DbError> {
        Ok(self
            .db
            .first::<(Option<i32>,)>("postings", (brand,))
            .await?
            .and_then(|(sum,)| sum)
            .map_or(0, |n| n.max(0) as u64))
    }
}

/// The commission and batch an event's ledger lines refer to.
fn refs(event: &PayoutsEvent) -> (String, String) {
    match event {
        PayoutsEvent::CommissionAccrued(e) => (e.commission_id.clone(), String::new()),
        PayoutsEvent::CommissionVested(e) => (e.commission_id.clone(), String::new()),
        PayoutsEvent::CommissionReversed(e) => (e.commission_id.clone(), String::new()),
        PayoutsEvent::CommissionAdjusted(e) => (e.commission_id.clone(), String::new()),
        PayoutsEvent::CommissionClawedBack(e) => (e.commission_id.clone(), String::new()),
        PayoutsEvent::CommissionSettled(e) => (e.commission_id.clone(), e.batch_id.clone()),
        PayoutsEvent::ClawbackNetted(e) => (e.commission_id.clone(), e.batch_id.clone()),
        PayoutsEvent::ReceivableWrittenOff(e) => (e.commission_id.clone(), String::new()),
        PayoutsEvent::PayoutMarkedPaid(e) => (String::new(), e.batch_id.clone()),
        _ => (String::new(), String::new()),
    }
}
