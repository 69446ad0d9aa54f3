//! Connecting to the cluster.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use scylla::client::SelfIdentity;
use scylla::client::execution_profile::ExecutionProfile;
use scylla::client::session::Session;
use scylla::client::session_builder::SessionBuilder;

/// Connects to the given contact points, retrying for up to `wait` while the cluster starts.
/// Requests use the driver's default timeout (30 s): right for tools (migrations wait for schema
/// changes), too long for a service; services use [`connect_with_request_timeout`].
pub async fn connect(nodes: &[String], wait: Duration) -> anyhow::Result<Arc<Session>> {
    connect_with(nodes, wait, SessionBuilder::new()).await
}

/// Like [`connect`], but every request on the session (all its retries included) fails with the
/// driver's `RequestTimeout` error after `request_timeout`. A database that accepts connections
/// but does not answer (frozen, overloaded) then costs a caller this long, not its whole deadline.
pub async fn connect_with_request_timeout(
    nodes: &[String],
    wait: Duration,
    request_timeout: Duration,
) -> anyhow::Result<Arc<Session>> {
    let profile = ExecutionProfile::builder()
        .request_timeout(Some(request_timeout))
        .build();
    let builder = SessionBuilder::new().default_execution_profile_handle(profile.into_handle());
    connect_with(nodes, wait, builder).await
}

async fn connect_with(
    nodes: &[String],
    wait: Duration,
    builder: SessionBuilder,
) -> anyhow::Result<Arc<Session>> {
    let deadline = tokio::time::Instant::now() + wait;
    // The program's name travels in the connection's STARTUP, so the cluster can tell which
    // service sent what (Cassandra's `system_views.clients`, ScyllaDB's client list).
    let builder = match program_name() {
        Some(name) => builder.custom_identity(SelfIdentity::new().with_application_name(name)),
        None => builder,
    };
    let builder = match login_from_env()? {
        Some(login) => builder.user(login.username, login.password),
        None => builder,
    };
    loop {
        let attempt = builder
            .clone()
            .known_nodes(nodes)
            .connection_timeout(Duration::from_secs(5))
            .build()
            .await;
        match attempt {
            Ok(session) => return Ok(Arc::new(session)),
            // A refused login does not mend by waiting: say at once what to set.
            Err(error) if is_login_refused(&error.to_string()) => {
                return Err(error).with_context(|| {
                    format!(
                        "cql nodes {nodes:?} refused the login: set SCANLOOP_CQL_USERNAME and \
                         SCANLOOP_CQL_PASSWORD (for the devstack: eval \"$(deploy/devstack/devstack env)\")"
                    )
                });
            }
            Err(error) if tokio::time::Instant::now() < deadline => {
                tracing::warn!(%error, nodes = ?nodes, "cql cluster not reachable yet; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            Err(error) => {
                return Err(error)
                    .with_context(|| format!("cannot connect to cql nodes {nodes:?}"));
            }
        }
    }
}

/// The role a process logs in as, from `SCANLOOP_CQL_USERNAME` and `SCANLOOP_CQL_PASSWORD`.
/// The driver sends it only to a cluster that asks for a login (the devstack does; its
/// `devstack env` prints its own).
struct Login {
    username: String,
    password: String,
}

fn login_from_env() -> anyhow::Result<Option<Login>> {
    let read = |name: &str| std::env::var(name).ok().filter(|value| !value.is_empty());
    match (read("SCANLOOP_CQL_USERNAME"), read("SCANLOOP_CQL_PASSWORD")) {
        (Some(username), Some(password)) => Ok(Some(Login { username, password })),
        (None, None) => Ok(None),
        (Some(_), None) => {
            anyhow::bail!("SCANLOOP_CQL_USERNAME is set but SCANLOOP_CQL_PASSWORD is not")
        }
        (None, Some(_)) => {
            anyhow::bail!("SCANLOOP_CQL_PASSWORD is set but SCANLOOP_CQL_USERNAME is not")
        }
    }
}

/// The driver's words for a login the cluster asked for and did not get (none given, or refused).
fn is_login_refused(error: &str) -> bool {
    let error = error.to_ascii_lowercase();
    error.contains("authentication is required")
        || error.contains("authentication error")
        || error.contains("username and/or password are incorrect")
}

/// This executable's file name (`scanloop-activation`, `scanloop`, a test binary's name).
fn program_name() -> Option<String> {
    let exe = std::env::current_exe().ok()?;
    Some(exe.file_stem()?.to_string_lossy().into_owned())
}

/// Keyspace and table names are spliced into CQL text, so they are restricted to what CQL allows
/// unquoted: a letter, then letters, digits and underscores, at most 48 characters.
pub fn is_valid_identifier(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && name.len() <= 48
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers() {
        assert!(is_valid_identifier("scanloop_activation"));
        assert!(!is_valid_identifier("1abc"));
        assert!(!is_valid_identifier("a; DROP KEYSPACE x"));
        assert!(!is_valid_identifier(""));
    }
}
