//! The membership service process: its name, its configuration and its server. Wiring only.

use scanloop_membership::{config::Config, server};

#[global_allocator]
static ALLOCATOR: scanloop_alloc::Allocator = scanloop_alloc::Allocator;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    scanloop_service::run_process("scanloop-membership", Config::from_env, server::run).await
}
