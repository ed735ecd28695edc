//! The retry backoff every insync producer path shares: Kafka's `retry.backoff.ms` doubling
//! up to `retry.backoff.max.ms` (KIP-580).
use std::time::Duration;

/// Kafka's `retry.backoff.ms` as insync's clients set it: the first retry waits this long.
pub const RETRY_BACKOFF: Duration = Duration::from_millis(50);
/// Kafka's `retry.backoff.max.ms` default (KIP-580): the doubling stops here.
pub const RETRY_BACKOFF_MAX: Duration = Duration::from_millis(1_000);

/// Exponential retry backoff (KIP-580): 50, 100, 200, 400, 800, 1000, 1000, … ms.
///
/// Unlike Kafka's `ExponentialBackoff` there is no ±20% jitter: the delays are exact, as
/// insync's retry loops have always used them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    current: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff::new()
    }
}

impl Backoff {
    /// A backoff whose next wait is `RETRY_BACKOFF`.
    pub const fn new() -> Self {
        Backoff { current: RETRY_BACKOFF }
    }

    /// The wait before the next retry, without using it up (for deadline checks and logs).
    pub fn current(&self) -> Duration {
        self.current
    }

    /// Takes the wait before the next retry and doubles the one after, up to the maximum.
    pub fn next_delay(&mut self) -> Duration {
        let delay = self.current;
        self.current = (delay * 2).min(RETRY_BACKOFF_MAX);
        delay
    }

    /// Starts over after a success: the next failure waits `RETRY_BACKOFF` again (Kafka
    /// counts attempts per batch, so a new batch's first retry is short).
    pub fn reset(&mut self) {
        self.current = RETRY_BACKOFF;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn doubles_from_50_ms_up_to_1_s() {
        let mut backoff = Backoff::new();
        let delays: Vec<Duration> = (0..8).map(|_| backoff.next_delay()).collect();
        assert_eq!(delays, [ms(50), ms(100), ms(200), ms(400), ms(800), ms(1_000), ms(1_000), ms(1_000)]);
    }

    #[test]
    fn current_peeks_without_advancing() {
        let mut backoff = Backoff::new();
        assert_eq!(backoff.current(), ms(50));
        assert_eq!(backoff.current(), ms(50));
        backoff.next_delay();
        assert_eq!(backoff.current(), ms(100));
    }

    #[test]
    fn reset_starts_over() {
        let mut backoff = Backoff::default();
        for _ in 0..10 {
            backoff.next_delay();
        }
        assert_eq!(backoff.current(), ms(1_000));
        backoff.reset();
        assert_eq!(backoff.next_delay(), ms(50));
    }
}
