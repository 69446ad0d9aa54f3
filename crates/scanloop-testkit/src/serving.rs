//! Running services in-process in a test: the devstack's infrastructure settings, the access
//! settings (a test key the services trust), a listener on a free port, and a gRPC client once
//! the server answers, calling as a platform operator unless a test says otherwise.

use std::sync::OnceLock;
use std::time::Duration;

use scanloop_config::Infra;
use scanloop_service::ServerSettings;
pub use scanloop_service::access::AuthChannel;
use scanloop_service::access::credentials::jwks_document;
use scanloop_service::access::limits::LimitSettings;
use scanloop_service::access::{Bearer, Grant, Role, Signer, Verifier, authorized};
use tonic::transport::Channel;

/// Settings for services under test: the devstack, replication 1, three partitions per topic.
pub fn infra() -> Infra {
    Infra {
        cql_nodes: crate::cql_nodes(),
        kafka_brokers: crate::brokers(),
        replication_factor: 1,
        topic_partitions: 3,
        ..Infra::default()
    }
}

/// A listener on a free local port, and its address.
pub async fn listener() -> std::io::Result<(tokio::net::TcpListener, String)> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?.to_string();
    Ok((listener, addr))
}

/// The key test tokens are signed with (one per test process; the in-process services trust it).
pub fn signer() -> &'static Signer {
    static SIGNER: OnceLock<Signer> = OnceLock::new();
    SIGNER.get_or_init(|| Signer::generate("test-key"))
}

/// Server settings for services under test: they trust [`signer`]'s key, and the abuse limits
/// are far above what a test sends (tests of the limits set their own).
pub fn server_settings() -> ServerSettings {
    let verifier = Verifier::new(&[signer().public_jwk()]).unwrap_or_else(|error| {
        panic!("the test key is not a valid key: {error}");
    });
    ServerSettings {
        limits: LimitSettings {
            per_brand: 1_000_000,
            per_client: 1_000_000,
        },
        ..ServerSettings::trusting(verifier)
    }
}

/// A JWKS file with [`signer`]'s public key, for a service started as a process
/// (`SCANLOOP_AUTH_JWKS`).
pub fn jwks_file() -> std::path::PathBuf {
    static FILE: OnceLock<std::path::PathBuf> = OnceLock::new();
    FILE.get_or_init(|| {
        let path =
            std::env::temp_dir().join(format!("scanloop-test-jwks-{}.json", std::process::id()));
        std::fs::write(&path, jwks_document(&[signer().public_jwk()]))
            .unwrap_or_else(|error| panic!("cannot write {}: {error}", path.display()));
        path
    })
    .clone()
}

/// A token from [`signer`] for `subject`, acting for `brands` (`"*"`: all) in `roles`.
pub fn token(subject: &str, brands: &[&str], roles: &[Role]) -> String {
    let grant = Grant {
        subject: subject.to_owned(),
        brands: brands.iter().map(|brand| (*brand).to_owned()).collect(),
        roles: roles.to_vec(),
        ttl: Duration::from_secs(3_600),
    };
    signer()
        .issue(&grant)
        .unwrap_or_else(|error| panic!("cannot sign a test token: {error}"))
}

/// A platform operator's credentials for every brand: what tests call with unless they test
/// access itself.
pub fn platform_bearer() -> Bearer {
    Bearer::new(&token("test-platform", &["*"], &[Role::Platform]))
        .unwrap_or_else(|error| panic!("a test token is not valid metadata: {error}"))
}

/// A client of the server at `addr` calling as [`platform_bearer`], once the server accepts
/// connections (up to 60 s).
pub async fn connect<T>(addr: &str, make: impl Fn(AuthChannel) -> T) -> anyhow::Result<T> {
    connect_as(addr, platform_bearer(), make).await
}

/// A client of the server at `addr` calling with `bearer`'s token.
pub async fn connect_as<T>(
    addr: &str,
    bearer: Bearer,
    make: impl Fn(AuthChannel) -> T,
) -> anyhow::Result<T> {
    let channel = channel(addr).await?;
    Ok(make(authorized(channel, bearer)))
}

/// A plain channel to `addr` once it accepts connections (up to 60 s).
pub async fn channel(addr: &str) -> anyhow::Result<Channel> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))?;
    loop {
        match endpoint.connect().await {
            Ok(channel) => return Ok(channel),
            Err(error) if tokio::time::Instant::now() >= deadline => {
                anyhow::bail!("{addr} never came up: {error}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}
