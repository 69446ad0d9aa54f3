//! How the CLI authenticates to the services: the token in SCANLOOP_TOKEN when set; otherwise,
//! in development mode (SCANLOOP_ENV=dev, as the demo and the benchmarks run), a short-lived
//! platform token signed with the development key, which only development services trust.

use std::time::Duration;

use scanloop_config::Environment;
use scanloop_service::access::{AuthChannel, Bearer, Grant, Role, Signer, authorized};

/// Credentials for `command` (named in the token's subject, so the services' events say which
/// CLI command acted).
pub fn bearer(command: &str) -> anyhow::Result<Bearer> {
    if let Ok(token) = std::env::var("SCANLOOP_TOKEN")
        && !token.trim().is_empty()
    {
        return Bearer::new(token.trim());
    }
    anyhow::ensure!(
        Environment::from_env()? == Environment::Development,
        "no credentials: set SCANLOOP_TOKEN to a token with the roles this command needs \
         (`scanloop token issue`), or SCANLOOP_ENV=dev against development services"
    );
    let token = Signer::development().issue(&Grant {
        subject: format!("scanloop-cli/{command}"),
        brands: vec!["*".into()],
        roles: vec![Role::Platform],
        ttl: Duration::from_secs(24 * 3_600),
    })?;
    Bearer::new(&token)
}

/// A client of the service at `addr` (host:port) calling with `bearer`.
pub async fn connect<T>(
    addr: &str,
    bearer: &Bearer,
    make: impl FnOnce(AuthChannel) -> T,
) -> anyhow::Result<T> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))?
        .connect()
        .await?;
    Ok(make(authorized(channel, bearer.clone())))
}
