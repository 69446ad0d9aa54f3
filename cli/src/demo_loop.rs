//! `scanloop demo loop`: the seed's whole growth loop for one brand, against the four running
//! services, narrated step by step. Every step's result is checked against what the loop should
//! produce, with fixed expected values; the command fails at the first step that differs.
//!
//! The story: a batch is issued; A buys, activates and becomes a member; A engages until KOC
//! (初级分享官), shares a campaign link and its QR card; friends B, C and D buy through it (three
//! attributions, A their parent, A's assist completes: +12 months); D shares and E buys through
//! D's link (level 1 for D, level 2 for A); C returns the phone inside the window (C's commission
//! reversed); the window passes, finance settles and pays, statements and the ledger check,
//! and finance's reconciliation of every account and batch against the events.
//!
//! Time: the plan's return window is one day and the demo's purchases are dated one day ago less
//! `--window-lead-secs`, so the window closes a minute or two into the demo and the vesting
//! timers fire on the services' real clocks, with nothing faked in the services.

mod calls;
mod cast;
mod growth;
mod money;

use std::collections::BTreeMap;
use std::path::PathBuf;

use crate::cluster::{Addrs, Cluster};
use cast::D;
use chrono::{DateTime, Utc};

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    addrs: Addrs,
    /// The brand the demo acts for; default a new one per run (`demo-<time>`), so the demo can
    /// run again on the same cluster.
    #[arg(long)]
    brand: Option<String>,
    /// Where the share card is written.
    #[arg(long, default_value = ".devstack/demo")]
    out: PathBuf,
    /// Seconds from the demo's start until the return window of its purchases closes.
    #[arg(long, default_value_t = 90)]
    window_lead_secs: u32,
    /// The payouts topic finance's reconciliation reads the brand's events from.
    #[arg(
        long,
        env = "SCANLOOP_PAYOUTS_TOPIC",
        default_value = "scanloop.payouts.events.v1"
    )]
    payouts_topic: String,
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    // A purchase may not be dated before its batch's issue less a day, nor in the future.
    anyhow::ensure!(
        (1..=3_600).contains(&args.window_lead_secs),
        "--window-lead-secs is 1 ..= 3600 (the purchases are dated a day ago less this)"
    );
    let brand = args
        .brand
        .unwrap_or_else(|| format!("demo-{}", Utc::now().format("%Y%m%d-%H%M%S")));
    let started = Utc::now();
    let window_closes = started + chrono::Duration::seconds(i64::from(args.window_lead_secs));
    let demo = Demo {
        cluster: Cluster::connect(&args.addrs, std::slice::from_ref(&brand)).await?,
        brand,
        purchased_at: window_closes - chrono::Duration::days(1),
        window_closes,
        out: args.out,
        payouts_topic: args.payouts_topic,
        members: BTreeMap::new(),
        codes: BTreeMap::new(),
        a_warranty_ends: None,
    };
    demo.run().await
}

struct Demo {
    cluster: Cluster,
    brand: String,
    /// Every purchase's date: the return window (one day) closes at `window_closes`.
    purchased_at: DateTime<Utc>,
    window_closes: DateTime<Utc>,
    out: PathBuf,
    payouts_topic: String,
    /// Member id → buyer name, and buyer name → the code they activated.
    members: BTreeMap<String, &'static str>,
    codes: BTreeMap<&'static str, String>,
    /// A's warranty end as activated, before the assist moves it.
    a_warranty_ends: Option<prost_types::Timestamp>,
}

impl Demo {
    async fn run(mut self) -> anyhow::Result<()> {
        println!("The growth loop for brand {}, step by step.\n", self.brand);
        self.set_up().await?;
        let codes = self.issue_batch().await?;
        let a = self.first_buyer(&codes[0]).await?;
        let link = self.a_shares(&a).await?;
        self.friends_buy_through(&a, &link, &codes[1..4]).await?;
        self.assist_completes(&a).await?;
        let d = self.member_id(&D).await?;
        self.second_level(&a, &d, &codes[4]).await?;
        self.commissions_accrue(&a, &d).await?;
        self.c_returns(&a).await?;
        self.window_passes(&a, &d).await?;
        let paid = self.settle_and_pay(&a, &d).await?;
        self.statements(&a, &d).await?;
        self.ledger_balances().await?;
        self.reconciliation().await?;
        self.figures(&a, &d, paid).await?;
        Ok(())
    }
}
