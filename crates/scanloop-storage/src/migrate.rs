//! Schema migrations as an explicit, idempotent step.
//!
//! Services never create schema at start-up (concurrent schema changes from many replicas collide
//! in Cassandra and ScyllaDB). `scanloop migrate` applies the migrations once per keyspace and
//! records each in `schema_migrations`; a service calls [`require_schema`] at start-up and refuses
//! to run, with a message that says what to do, if its schema is missing or too old.

use std::time::Duration;

use scylla::client::session::Session;
use scylla::errors::ExecutionError;
use scylla::statement::Statement;

use crate::DbError;

/// How long one schema statement may take. A schema change on a busy node (a 2-core machine
/// running the whole devstack under tests, or a cluster under load) can take longer than the
/// session's per-request timeout, which is sized for queries; the statements are idempotent,
/// so one that still times out is sent again, up to [`DDL_ATTEMPTS`] times.
const DDL_TIMEOUT: Duration = Duration::from_secs(120);
const DDL_ATTEMPTS: u32 = 3;

/// One step of a component's schema. `statements` use `{ks}` for the keyspace and must be
/// idempotent themselves (`IF NOT EXISTS`; an `ALTER TABLE … ADD` of a column that is already
/// there counts as done), so a run interrupted half-way can simply be repeated.
pub struct Migration {
    /// Who owns the tables: "eventstore", "consumer", "activation", ...
    pub component: &'static str,
    /// Contiguous from 1 within the component.
    pub version: i32,
    pub description: &'static str,
    pub statements: &'static [&'static str],
}

/// The version a build of a component needs: its last migration's. Each component's
/// `SCHEMA_VERSION` is this, so a migration cannot be added without the build requiring it.
pub const fn latest_version(migrations: &[Migration]) -> i32 {
    match migrations.last() {
        Some(migration) => migration.version,
        None => 0,
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SchemaError {
    #[error("invalid keyspace name {0:?}: use letters, digits and underscores")]
    InvalidKeyspace(String),
    #[error(
        "keyspace {keyspace} has schema {component} at version {found}, this build needs {needed}: \
         run `scanloop migrate` (or the migrate job) against this cluster first"
    )]
    Outdated {
        keyspace: String,
        component: String,
        found: i32,
        needed: i32,
    },
    #[error("schema check failed: {0}")]
    Db(#[from] DbError),
}

fn db<E: Into<DbError>>(e: E) -> SchemaError {
    SchemaError::Db(e.into())
}

/// Creates `keyspace` if needed and applies every migration not yet recorded there.
/// `keyspace_options` is appended to the replication clause verbatim (for ScyllaDB:
/// `AND tablets = {'enabled': false}`, since LWT needs vnode keyspaces there).
/// Returns the migrations it applied, as "component/version".
pub async fn migrate(
    session: &Session,
    keyspace: &str,
    replication_factor: u16,
    keyspace_options: &str,
    migrations: &[&Migration],
) -> Result<Vec<String>, SchemaError> {
    if !crate::is_valid_identifier(keyspace) {
        return Err(SchemaError::InvalidKeyspace(keyspace.to_owned()));
    }
    let create_keyspace = format!(
        "CREATE KEYSPACE IF NOT EXISTS {keyspace} WITH replication = \
         {{'class': 'NetworkTopologyStrategy', 'replication_factor': {replication_factor}}} \
         {keyspace_options}"
    );
    run_ddl(session, &create_keyspace).await?;
    run_ddl(
        session,
        &format!(
            "CREATE TABLE IF NOT EXISTS {keyspace}.schema_migrations (\
             component text, version int, description text, applied_at timestamp, \
             PRIMARY KEY (component, version))"
        ),
    )
    .await?;

    let mut applied = Vec::new();
    for migration in migrations {
        if applied_version(session, keyspace, migration.component).await? >= migration.version {
            continue;
        }
        tracing::info!(
            keyspace,
            component = migration.component,
            version = migration.version,
            description = migration.description,
            "applying migration"
        );
        for statement in migration.statements {
            run_ddl(session, &statement.replace("{ks}", keyspace)).await?;
        }
        session
            .query_unpaged(
                format!(
                    "INSERT INTO {keyspace}.schema_migrations \
                     (component, version, description, applied_at) VALUES (?, ?, ?, ?)"
                ),
                (
                    migration.component,
                    migration.version,
                    migration.description,
                    chrono::Utc::now(),
                ),
            )
            .await
            .map_err(db)?;
        applied.push(format!("{}/{}", migration.component, migration.version));
    }
    Ok(applied)
}

/// Fails unless `component` is at `needed` or later in `keyspace`.
pub async fn require_schema(
    session: &Session,
    keyspace: &str,
    component: &str,
    needed: i32,
) -> Result<(), SchemaError> {
    if !crate::is_valid_identifier(keyspace) {
        return Err(SchemaError::InvalidKeyspace(keyspace.to_owned()));
    }
    let found = applied_version(session, keyspace, component)
        .await
        // A missing keyspace or table means "nothing applied", not a database fault.
        .or_else(|error| match &error {
            SchemaError::Db(e) if is_missing_schema(e) => Ok(0),
            _ => Err(error),
        })?;
    if found < needed {
        return Err(SchemaError::Outdated {
            keyspace: keyspace.to_owned(),
            component: component.to_owned(),
            found,
            needed,
        });
    }
    Ok(())
}

/// The highest migration of `component` recorded in `keyspace` (0 when none).
async fn applied_version(
    session: &Session,
    keyspace: &str,
    component: &str,
) -> Result<i32, SchemaError> {
    let result = session
        .query_unpaged(
            format!("SELECT max(version) FROM {keyspace}.schema_migrations WHERE component = ?"),
            (component,),
        )
        .await
        .map_err(db)?
        .into_rows_result()
        .map_err(db)?;
    let (version,) = result.first_row::<(Option<i32>,)>().map_err(db)?;
    Ok(version.unwrap_or(0))
}

/// Sends one schema statement, which must be idempotent, allowing it [`DDL_TIMEOUT`] and
/// sending it again when it still times out, [`DDL_ATTEMPTS`] times in all.
pub async fn schema_change(session: &Session, statement: &str) -> Result<(), ExecutionError> {
    let mut ddl = Statement::new(statement);
    ddl.set_request_timeout(Some(DDL_TIMEOUT));
    let mut attempt = 1;
    loop {
        match session.query_unpaged(ddl.clone(), ()).await {
            Err(ExecutionError::RequestTimeout(_)) if attempt < DDL_ATTEMPTS => {
                tracing::warn!(
                    statement,
                    attempt,
                    "schema statement timed out; sending it again"
                );
                attempt += 1;
            }
            outcome => return outcome.map(|_| ()),
        }
    }
}

async fn run_ddl(session: &Session, statement: &str) -> Result<(), SchemaError> {
    let outcome = schema_change(session, statement).await;
    if let Err(error) = outcome {
        // CQL has no portable `ADD IF NOT EXISTS` (ScyllaDB lacks it): a column added by an
        // interrupted earlier run is what this statement wanted.
        let text = error.to_string();
        let column_exists =
            text.contains("conflicts with an existing column") || text.contains("already exists");
        if !(is_add_column(statement) && column_exists) {
            return Err(db(error));
        }
    }
    // Wait until every node sees the change before the next statement depends on it.
    session.await_schema_agreement().await.map_err(db)?;
    Ok(())
}

fn is_add_column(statement: &str) -> bool {
    let upper = statement.to_ascii_uppercase();
    upper.starts_with("ALTER TABLE") && upper.contains(" ADD ")
}

fn is_missing_schema(error: &DbError) -> bool {
    let text = error.to_string();
    text.contains("unconfigured table")
        || text.contains("does not exist")
        || text.contains("Keyspace") && text.contains("not exist")
}
