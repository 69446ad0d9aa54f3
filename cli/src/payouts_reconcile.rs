//! `scanloop payouts reconcile --brand B`: recomputes every account and every settlement batch of
//! a brand from its events alone (the payouts topic, from the beginning) and compares them with
//! what the payouts read models answer (GetAccount, GetSettlement, ListSettlements). Prints each
//! difference and exits non-zero on any; prints the totals it checked when there is none.
//!
//! Finance runs it before paying a batch and at each period's close; the demo and the crash,
//! fault and property tests run it at their end. The services should be quiet (no settlement
//! running) and caught up: a read model that lags shows as a difference; run it again.

use scanloop_payouts::reconcile;
use scanloop_proto::payouts::v1::payouts_service_client::PayoutsServiceClient;

#[derive(clap::Args)]
pub struct ReconcileArgs {
    /// The brand to reconcile.
    #[arg(long)]
    brand: String,
    /// The payouts topic (every payouts event, kept forever).
    #[arg(
        long,
        env = "SCANLOOP_PAYOUTS_TOPIC",
        default_value = "scanloop.payouts.events.v1"
    )]
    topic: String,
    /// The payouts service's gRPC address.
    #[arg(long, env = "SCANLOOP_PAYOUTS_ADDR", default_value = "127.0.0.1:50054")]
    addr: String,
}

pub async fn run(brokers: &str, args: ReconcileArgs) -> anyhow::Result<()> {
    let bearer = crate::credentials::bearer("payouts-reconcile")?;
    let client =
        crate::credentials::connect(&args.addr, &bearer, PayoutsServiceClient::new).await?;
    let report = reconcile::check(brokers, &args.topic, &args.brand, client).await?;
    if report.differences.is_empty() {
        println!(
            "reconciled {}: {} events on {} streams; {} accounts and {} batches agree with the \
             read models; the ledger sums to 0",
            args.brand, report.events, report.streams, report.accounts, report.batches
        );
        return Ok(());
    }
    for difference in &report.differences {
        println!("DIFFERENCE {difference}");
    }
    anyhow::bail!(
        "{} differences between {}'s events and its read models",
        report.differences.len(),
        args.brand
    )
}
