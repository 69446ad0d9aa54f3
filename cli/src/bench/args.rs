//! `scanloop bench`'s command line: the phases' pace, the services to measure, and their pids.

use std::path::PathBuf;

#[derive(clap::Args, Clone)]
pub struct Args {
    /// Measured seconds per phase.
    #[arg(long, default_value_t = 10)]
    pub(crate) duration_secs: u64,
    /// Unmeasured warm-up seconds before each phase.
    #[arg(long, default_value_t = 2)]
    pub(crate) warmup_secs: u64,
    /// Unmeasured seconds of plain inserts and appends before the first phase: a Cassandra
    /// just started runs its first minute or so interpreted, and without this the first phase
    /// (the plain insert every ratio divides by) measured under half its warm rate.
    #[arg(long, default_value_t = 30)]
    pub(crate) servers_warmup_secs: u64,
    /// Operations in flight at once.
    #[arg(long, default_value_t = 32)]
    pub(crate) concurrency: usize,
    /// Open-loop rate in operations per second; 0 runs a closed loop.
    #[arg(long, default_value_t = 0.0)]
    pub(crate) rate: f64,
    /// Bytes of event payload.
    #[arg(long, default_value_t = 200)]
    pub(crate) payload_bytes: usize,
    /// Devstack state directory, to find Cassandra's and Kafka's pids for CPU accounting.
    #[arg(long, env = "SCANLOOP_DEVSTACK_DIR")]
    pub(crate) devstack_dir: Option<PathBuf>,
    /// A running activation service: adds the gRPC phases (VerifyCode, ActivateWarranty).
    #[arg(long)]
    pub(crate) activation_addr: Option<String>,
    /// The activation service's pid, for CPU accounting.
    #[arg(long)]
    pub(crate) activation_pid: Option<u32>,
    /// Codes issued for the ActivateWarranty phase (each activation uses a fresh one).
    #[arg(long, default_value_t = 200_000)]
    pub(crate) activation_codes: u32,
    /// A running membership service; with --referral-addr adds the referral phase.
    #[arg(long)]
    pub(crate) membership_addr: Option<String>,
    /// The membership service's pid, for CPU accounting.
    #[arg(long)]
    pub(crate) membership_pid: Option<u32>,
    /// A running referral service (reacting to the activation service's events).
    #[arg(long)]
    pub(crate) referral_addr: Option<String>,
    /// The referral service's pid, for CPU accounting.
    #[arg(long)]
    pub(crate) referral_pid: Option<u32>,
    /// Membership and referral were paused (SIGSTOP) by the caller so that they take no CPU
    /// during the other phases: resume them (SIGCONT) when the referral phase starts.
    #[arg(long)]
    pub(crate) resume_chain: bool,
    /// The topic the referral service publishes to.
    #[arg(
        long,
        env = "SCANLOOP_REFERRAL_TOPIC",
        default_value_t = scanloop_bus::topics::event_topic("referral")
    )]
    pub(crate) referral_topic: String,
    /// Codes issued for the referral phase (referrers and buyers each use a fresh one).
    #[arg(long, default_value_t = 100_000)]
    pub(crate) referral_codes: u32,
    /// Referrers whose links the referral phase's buyers use, round robin.
    #[arg(long, default_value_t = 50)]
    pub(crate) referrers: u32,
    /// How long the referral phase waits for membership and referral: to know each referrer
    /// (they first catch up on the earlier phases' activations, tens of thousands on a fast
    /// machine), and after its load for the last attribution.
    #[arg(long, default_value_t = 600)]
    pub(crate) referral_wait_secs: u64,
    /// Writes the plain insert's figures here (JSON), for `scanloop loadgen --baseline` to
    /// print its ratios against the same run's baseline.
    #[arg(long)]
    pub(crate) baseline_out: Option<PathBuf>,
}
