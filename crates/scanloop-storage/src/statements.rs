//! Named prepared statements over one keyspace: a service whose tables are many and small
//! declares its statements as `(name, cql)` pairs and runs them by name.

use std::collections::HashMap;
use std::sync::Arc;

use crate::DbError;
use scylla::client::session::Session;
use scylla::deserialize::row::DeserializeRow;
use scylla::response::query_result::QueryResult;
use scylla::serialize::row::SerializeRow;
use scylla::statement::prepared::PreparedStatement;
use scylla::value::{CqlValue, Row};

/// The reply to a conditional write or batch (`... IF ...`).
#[derive(Debug, Clone, PartialEq)]
pub struct ConditionalReply {
    /// The `[applied]` column.
    pub applied: bool,
    /// The columns after it: a refused write's current values of the row, none when the row
    /// does not exist (or the write was applied).
    pub current: Vec<Option<CqlValue>>,
}

/// Reads a conditional statement's reply. A reply without a boolean `[applied]` first is an
/// error, never taken for "not applied".
pub fn conditional_reply(result: QueryResult) -> Result<ConditionalReply, DbError> {
    let row: Row = result.into_rows_result()?.first_row()?;
    let mut columns = row.columns.into_iter();
    match columns.next() {
        Some(Some(CqlValue::Boolean(applied))) => Ok(ConditionalReply {
            applied,
            current: columns.collect(),
        }),
        other => Err(DbError::msg(format!(
            "unexpected reply to a conditional write: [applied] is {other:?}"
        ))),
    }
}

#[derive(Clone)]
pub struct Db {
    session: Arc<Session>,
    statements: Arc<HashMap<&'static str, PreparedStatement>>,
}

impl Db {
    /// Prepares every statement; `{ks}` in the CQL stands for the keyspace.
    pub async fn prepare(
        session: Arc<Session>,
        keyspace: &str,
        cql: &[(&'static str, &str)],
    ) -> anyhow::Result<Self> {
        let mut statements = HashMap::new();
        for (name, text) in cql {
            let prepared = session.prepare(text.replace("{ks}", keyspace)).await?;
            statements.insert(*name, prepared);
        }
        Ok(Self {
            session,
            statements: Arc::new(statements),
        })
    }

    pub fn session(&self) -> &Arc<Session> {
        &self.session
    }

    pub fn statement(&self, name: &str) -> Result<&PreparedStatement, DbError> {
        self.statements
            .get(name)
            .ok_or_else(|| DbError::msg(format!("no prepared statement {name:?} (a bug)")))
    }

    pub async fn exec(&self, name: &str, values: impl SerializeRow) -> Result<(), DbError> {
        self.session
            .execute_unpaged(self.statement(name)?, values)
            .await?;
        Ok(())
    }

    /// Runs a conditional statement (`... IF NOT EXISTS`); true when it was applied.
    pub async fn exec_if(&self, name: &str, values: impl SerializeRow) -> Result<bool, DbError> {
        let result = self
            .session
            .execute_unpaged(self.statement(name)?, values)
            .await?;
        Ok(conditional_reply(result)?.applied)
    }

    pub async fn rows<R>(&self, name: &str, values: impl SerializeRow) -> Result<Vec<R>, DbError>
    where
        R: for<'frame, 'metadata> DeserializeRow<'frame, 'metadata>,
    {
        let result = self
            .session
            .execute_unpaged(self.statement(name)?, values)
            .await?
            .into_rows_result()?;
        let rows = result
            .rows::<R>()?
            .collect::<Result<Vec<R>, _>>()
            .map_err(DbError::new)?;
        Ok(rows)
    }

    pub async fn first<R>(
        &self,
        name: &str,
        values: impl SerializeRow,
    ) -> Result<Option<R>, DbError>
    where
        R: for<'frame, 'metadata> DeserializeRow<'frame, 'metadata>,
    {
        Ok(self.rows(name, values).await?.into_iter().next())
    }
}
