//! Gives the C libraries' freed memory back to the kernel. The services' own allocations go to
//! mimalloc, which returns freed pages by itself; librdkafka (and zlib) allocate with glibc's
//! malloc, which keeps what a burst took in its arenas for the life of the process. A consumer
//! catching up on a backlog (after a stall, or a restart behind its group's offsets) pre-fetches
//! up to 64 MiB of records, and glibc kept that much: membership's glibc arenas held 75.7 MiB
//! after catching up in the bench's referral phase, flat for the next 15 minutes (issue 10,
//! `/proc/<pid>/smaps`). `malloc_trim(0)` hands the free pages of every arena back: with it the
//! glibc arenas held 1.2–2.6 MiB per service through the same 15 minutes (22 MiB, what stays
//! in use or in pages it cannot free, after an 88 MiB catch-up in another run). Once a minute is
//! rare enough for its walk (it locks each arena in turn) not to matter next to the load.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// How often glibc's free pages are handed back.
const TRIM_EVERY: Duration = Duration::from_secs(60);

/// Trims glibc's arenas every [`TRIM_EVERY`] until `shutdown`.
pub async fn trim_until(shutdown: CancellationToken) -> anyhow::Result<()> {
    let mut ticks = tokio::time::interval(TRIM_EVERY);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticks.tick().await;
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return Ok(()),
            _ = ticks.tick() => {}
        }
        // The walk over the arenas takes their locks: off the async workers.
        tokio::task::spawn_blocking(trim).await?;
    }
}

/// Hands glibc's free pages back to the kernel; does nothing where the C library is not glibc.
fn trim() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim takes no pointers and is thread-safe (it locks each arena it walks).
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_trimmer_stops_at_shutdown() {
        let shutdown = CancellationToken::new();
        let trimmer = tokio::spawn(trim_until(shutdown.clone()));
        shutdown.cancel();
        let stopped = tokio::time::timeout(Duration::from_secs(5), trimmer).await;
        assert!(matches!(stopped, Ok(Ok(Ok(())))), "{stopped:?}");
    }
}
