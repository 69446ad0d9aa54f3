//! The Scanloop processes' allocator, and what keeps their resident memory to what they use.
//!
//! [`Allocator`] is the global allocator every process installs in its `main.rs`. The services
//! call [`keep_huge_pages_off`] first thing and run [`trim_until`] for their lifetime (both in
//! `scanloop_service::run_process`).
//!
//! Transparent huge pages are off for the process ([`keep_huge_pages_off`]). mimalloc asks for
//! them on its 1 GiB arena (`madvise(MADV_HUGEPAGE)`, unless built with its `no_thp` feature,
//! which the workspace sets), and the kernel's khugepaged then collapses any 2 MiB range with a
//! single page in use into a whole huge page (`max_ptes_none` is 511 by default). Minutes into
//! a load it did, at about 40 MiB a minute until every such range was whole: referral's mimalloc
//! arena went from 38 to 77 MiB resident, 12 → 66 MiB of it huge pages (`AnonHugePages` in
//! `/proc/<pid>/smaps`), membership's from 57 to 186 MiB in another run, for the same live
//! heap. The `no_thp` build alone covers hosts whose THP mode is `madvise`; the prctl also
//! covers `always`, the default on some distributions. The price, more TLB misses on a heap
//! of tens of MiB, is not measurable next to a service's network and database waits.
//!
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

/// The allocator every Scanloop process installs in its `main.rs` (`#[global_allocator]`):
/// mimalloc. Under load the services spent about 15% of their CPU in glibc's malloc and free
/// (issue 10's profile of the activation service: `_int_malloc`, `_int_free`,
/// `malloc_consolidate`); each request allocates and frees many small buffers across threads.
///
/// With the `system-allocator` feature it is the C library's malloc instead, so that a malloc
/// profiler preloaded into the process (heaptrack, `scripts/profile-heap`) sees every
/// allocation: mimalloc takes its memory from the kernel directly.
#[cfg(not(feature = "system-allocator"))]
pub use mimalloc::MiMalloc as Allocator;
#[cfg(feature = "system-allocator")]
pub use std::alloc::System as Allocator;

/// How often glibc's free pages are handed back.
const TRIM_EVERY: Duration = Duration::from_secs(60);

/// Turns transparent huge pages off for this process and the threads it starts
/// (`PR_SET_THP_DISABLE`); call it first thing, before the heap grows. An error means the
/// kernel is older than 3.15 and the process runs as before.
pub fn keep_huge_pages_off() -> std::io::Result<()> {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: this prctl takes integers only and changes a flag of this process.
        let result = unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) };
        if result != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

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

    #[cfg(target_os = "linux")]
    #[test]
    fn huge_pages_are_off_afterwards() {
        keep_huge_pages_off().unwrap();
        // SAFETY: this prctl takes integers only and reads a flag of this process.
        let disabled = unsafe { libc::prctl(libc::PR_GET_THP_DISABLE, 0, 0, 0, 0) };
        assert_eq!(disabled, 1);
    }

    #[tokio::test]
    async fn the_trimmer_stops_at_shutdown() {
        let shutdown = CancellationToken::new();
        let trimmer = tokio::spawn(trim_until(shutdown.clone()));
        shutdown.cancel();
        let stopped = tokio::time::timeout(Duration::from_secs(5), trimmer).await;
        assert!(matches!(stopped, Ok(Ok(Ok(())))), "{stopped:?}");
    }
}
