//! How long to wait between attempts, and when to stop retrying an event.

use std::hash::{BuildHasher as _, Hasher as _};
use std::time::Duration;

/// Capped exponential backoff with jitter: the n-th wait is drawn from `[d/2, d]` where `d`
/// doubles from `initial` up to `max`. The jitter keeps many streams that failed together (one
/// database hiccup) from retrying in lockstep.
#[derive(Debug, Clone)]
pub(crate) struct Backoff {
    current: Duration,
    max: Duration,
}

impl Backoff {
    pub(crate) fn new(initial: Duration, max: Duration) -> Self {
        Self {
            current: initial.min(max),
            max,
        }
    }

    /// The next wait, with `jitter` in `[0, 1]` choosing where in `[d/2, d]` it falls.
    pub(crate) fn next_with(&mut self, jitter: f64) -> Duration {
        let ceiling = self.current;
        self.current = (self.current * 2).min(self.max);
        ceiling / 2 + ceiling.mul_f64(jitter.clamp(0.0, 1.0) / 2.0)
    }

    pub(crate) fn next(&mut self) -> Duration {
        self.next_with(random_fraction())
    }
}

/// A number in `[0, 1)` that differs from call to call. `RandomState` is seeded randomly per
/// thread and changes its keys on every construction: plenty for spreading retries, with no
/// random-number crate.
fn random_fraction() -> f64 {
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u32(std::process::id());
    (hasher.finish() >> 11) as f64 / (1u64 << 53) as f64
}

/// What the runner knows when an event has failed transiently `attempts` times.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Failing {
    pub attempts: u32,
    pub max_attempts: u32,
    /// Some other event was handled successfully since this one first failed.
    pub others_succeeded: bool,
    /// The checkpoint table answered just now.
    pub database_answers: bool,
}

impl Failing {
    /// Give up and dead-letter the event? Only once its attempts are used up *and* the failure
    /// looks like the event's own: if nothing else succeeds either, or the database does not
    /// answer, the consumer is in an outage, and dead-lettering every event that arrives during
    /// it would lose them from the read models; the runner keeps retrying at the longest backoff
    /// instead (the stream's own lane waits, nothing else does).
    pub(crate) fn give_up(&self) -> bool {
        self.attempts >= self.max_attempts && self.others_succeeded && self.database_answers
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap_and_stays_within_its_jitter_band() {
        let mut lowest = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
        let waits: Vec<_> = (0..6).map(|_| lowest.next_with(0.0)).collect();
        let ms = |n| Duration::from_millis(n);
        assert_eq!(waits, [ms(50), ms(100), ms(200), ms(400), ms(500), ms(500)]);

        let mut highest = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
        let waits: Vec<_> = (0..6).map(|_| highest.next_with(1.0)).collect();
        assert_eq!(
            waits,
            [ms(100), ms(200), ms(400), ms(800), ms(1000), ms(1000)]
        );

        let mut random = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
        for ceiling in [100, 200, 400, 800, 1000, 1000] {
            let wait = random.next();
            assert!(wait >= ms(ceiling / 2) && wait <= ms(ceiling), "{wait:?}");
        }
    }

    #[test]
    fn random_fractions_are_in_range_and_vary() {
        let draws: Vec<f64> = (0..100).map(|_| random_fraction()).collect();
        assert!(draws.iter().all(|f| (0.0..1.0).contains(f)));
        let distinct: std::collections::BTreeSet<u64> = draws.iter().map(|f| f.to_bits()).collect();
        assert!(distinct.len() > 90, "{} distinct of 100", distinct.len());
    }

    #[test]
    fn an_event_is_dead_lettered_only_when_its_failure_is_its_own() {
        let failing = Failing {
            attempts: 5,
            max_attempts: 5,
            others_succeeded: true,
            database_answers: true,
        };
        assert!(failing.give_up());
        assert!(
            !Failing {
                attempts: 4,
                ..failing
            }
            .give_up(),
            "attempts left"
        );
        assert!(
            !Failing {
                others_succeeded: false,
                ..failing
            }
            .give_up(),
            "nothing else succeeds: an outage"
        );
        assert!(
            !Failing {
                database_answers: false,
                ..failing
            }
            .give_up(),
            "the database is away: an outage"
        );
    }
}
