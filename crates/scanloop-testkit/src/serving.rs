//! Running services in-process in a test: the devstack's infrastructure settings, a listener on
//! a free port, and a gRPC client once the server answers.

use std::time::Duration;

use scanloop_config::Infra;
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

/// A client of the server at `addr`, once it accepts connections (up to 60 s).
pub async fn connect<T>(addr: &str, make: impl Fn(Channel) -> T) -> anyhow::Result<T> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))?;
    loop {
        match endpoint.connect().await {
            Ok(channel) => return Ok(make(channel)),
            Err(error) if tokio::time::Instant::now() >= deadline => {
                anyhow::bail!("{addr} never came up: {error}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}
