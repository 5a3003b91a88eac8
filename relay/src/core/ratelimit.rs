//! A token bucket, sans-IO: the per-participant limit on control messages.
//!
//! Each control message costs one token; tokens refill at `rate` per second up to
//! `burst`. A client over its rate is not closed: the relay stops reading its control
//! stream until a token is due, so QUIC flow control pushes back on that client alone
//! and every announcement it causes reaches the others at a bounded rate.

use std::time::{Duration, Instant};

/// Rate and burst of a [`TokenBucket`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    /// Tokens added per second.
    pub per_second: u32,
    /// Most tokens held at once (the burst a client may send back to back).
    pub burst: u32,
}

impl Default for RateLimit {
    fn default() -> Self {
        // A join's worth of subscribes (a gallery of 25 tiles, a few publishes) at
        // once, then a steady rate no honest client needs to exceed.
        Self {
            per_second: 50,
            burst: 100,
        }
    }
}

/// A token bucket. See the module docs.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    limit: RateLimit,
    /// Tokens, in millionths, so slow rates refill smoothly.
    micro_tokens: u64,
    last: Instant,
}

const MICRO: u64 = 1_000_000;

impl TokenBucket {
    /// A full bucket at `now`.
    pub fn new(limit: RateLimit, now: Instant) -> Self {
        Self {
            limit,
            micro_tokens: u64::from(limit.burst) * MICRO,
            last: now,
        }
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.last);
        self.last = self.last.max(now);
        let added = elapsed.as_micros() as u64 * u64::from(self.limit.per_second);
        let cap = u64::from(self.limit.burst) * MICRO;
        self.micro_tokens = (self.micro_tokens + added).min(cap);
    }

    /// Takes a token at `now` if there is one; otherwise says when there will be.
    pub fn take(&mut self, now: Instant) -> Result<(), Instant> {
        self.take_n(now, 1)
    }

    /// Takes `n` tokens at once (at most a full burst: a cost above the burst costs the
    /// whole burst), or says when they will be there.
    pub fn take_n(&mut self, now: Instant, n: u32) -> Result<(), Instant> {
        self.refill(now);
        let cost = u64::from(n.min(self.limit.burst).max(1)) * MICRO;
        if self.micro_tokens >= cost {
            self.micro_tokens -= cost;
            return Ok(());
        }
        if self.limit.per_second == 0 {
            // Never refills: the answer is "not within any sensible wait".
            return Err(now + Duration::from_secs(3600));
        }
        let missing = cost - self.micro_tokens;
        let wait_us = missing.div_ceil(u64::from(self.limit.per_second));
        Err(now + Duration::from_micros(wait_us))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_then_the_steady_rate() {
        let t0 = Instant::now();
        let limit = RateLimit {
            per_second: 10,
            burst: 3,
        };
        let mut b = TokenBucket::new(limit, t0);
        for _ in 0..3 {
            assert_eq!(b.take(t0), Ok(()));
        }
        let next = b.take(t0).unwrap_err();
        assert_eq!(next, t0 + Duration::from_millis(100));
        assert_eq!(b.take(next), Ok(()));
        assert!(b.take(next).is_err());
        // A long pause refills only up to the burst.
        let later = next + Duration::from_secs(60);
        for _ in 0..3 {
            assert_eq!(b.take(later), Ok(()));
        }
        assert!(b.take(later).is_err());
    }

    #[test]
    fn time_going_backwards_adds_nothing() {
        let t0 = Instant::now() + Duration::from_secs(1);
        let mut b = TokenBucket::new(
            RateLimit {
                per_second: 1,
                burst: 1,
            },
            t0,
        );
        assert_eq!(b.take(t0), Ok(()));
        assert!(b.take(t0 - Duration::from_millis(500)).is_err());
    }
}
