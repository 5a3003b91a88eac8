//! Brute-force and flood protection for joins, sans-IO: per-source and per-meeting
//! limits on join attempts (GCRA, from `governor`), a back-off that doubles with each
//! failed attempt from a source, and the *at-risk meeting* signal when one meeting
//! draws many failed attempts in a window.
//!
//! War-dialing is slow by design here: a source gets a few free failures, then waits
//! `backoff_base × 2^k` (capped) before it may try again, and every attempt beyond
//! its per-minute budget is answered with a `retry_after` instead of work.
//!
//! Sources are IPv4 addresses or IPv6 /64 prefixes (one subscriber's allocation), so
//! rotating addresses inside one prefix buys nothing. Every map is bounded by
//! [`GuardLimits::max_tracked`]: when full, idle entries are swept, and a source or
//! meeting that still finds no room shares one overflow entry — a flood of fresh
//! sources then competes for a single budget instead of growing memory.

use std::collections::HashMap;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use governor::clock::Clock;
use governor::middleware::NoOpMiddleware;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};

/// Where join attempts come from: an IPv4 address or an IPv6 /64.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SourceKey {
    /// One IPv4 address.
    V4([u8; 4]),
    /// One IPv6 /64 prefix.
    V6([u8; 8]),
    /// Every source that found the table full.
    Overflow,
}

impl From<IpAddr> for SourceKey {
    fn from(ip: IpAddr) -> Self {
        match ip {
            IpAddr::V4(v4) => SourceKey::V4(v4.octets()),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => SourceKey::V4(v4.octets()),
                None => {
                    let mut prefix = [0u8; 8];
                    prefix.copy_from_slice(&v6.octets()[..8]);
                    SourceKey::V6(prefix)
                }
            },
        }
    }
}

/// A meeting as the guard knows it: a keyed digest of its ID, never the ID.
pub type MeetingKey = [u8; 16];

/// The guard's settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GuardLimits {
    /// Join attempts per minute from one source (its burst is the same number).
    pub per_source_per_minute: u32,
    /// Join attempts per minute on one meeting ID, from everyone.
    pub per_meeting_per_minute: u32,
    /// Failed attempts a source may make before back-off starts.
    pub free_failures: u32,
    /// The first back-off; it doubles with each further failure.
    pub backoff_base: Duration,
    /// The longest back-off.
    pub backoff_max: Duration,
    /// Failed attempts on one meeting within `at_risk_window` that flag it at risk.
    pub at_risk_failures: u32,
    /// The window over which failures on a meeting are counted.
    pub at_risk_window: Duration,
    /// Most sources, and most meetings, tracked at once.
    pub max_tracked: usize,
}

impl Default for GuardLimits {
    fn default() -> Self {
        Self {
            // Generous for a shared NAT (an office joining at 09:00); failures, not
            // attempts, are what back off a guesser.
            per_source_per_minute: 600,
            // A 1,000-person webinar can fill within a minute or so.
            per_meeting_per_minute: 3_000,
            free_failures: 3,
            backoff_base: Duration::from_millis(500),
            backoff_max: Duration::from_secs(300),
            // An honest user mistypes a passcode two or three times; twenty failures
            // on one meeting within a minute is someone guessing.
            at_risk_failures: 20,
            at_risk_window: Duration::from_secs(60),
            max_tracked: 100_000,
        }
    }
}

/// Why an attempt may not proceed now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The source is backing off after failures, or over its budget.
    Source(Duration),
    /// The meeting ID is over its budget.
    Meeting(Duration),
}

impl Refusal {
    /// How long the client should wait.
    pub fn retry_after(self) -> Duration {
        match self {
            Refusal::Source(d) | Refusal::Meeting(d) => d,
        }
    }
}

/// A meeting crossed the at-risk threshold (reported once per window).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AtRisk {
    /// Failed attempts on it in the current window.
    pub failed_attempts: u64,
}

/// The guard's clock: set by the caller's `now` on every call, read by `governor`.
#[derive(Debug, Clone)]
struct EventClock {
    nanos: Arc<AtomicU64>,
}

impl Clock for EventClock {
    type Instant = Duration;

    fn now(&self) -> Duration {
        Duration::from_nanos(self.nanos.load(Ordering::Relaxed))
    }
}

type Limiter = RateLimiter<NotKeyed, InMemoryState, EventClock, NoOpMiddleware<Duration>>;

struct Source {
    limiter: Limiter,
    failures: u32,
    blocked_until: Instant,
    last_seen: Instant,
    last_failure: Option<Instant>,
}

struct MeetingWindow {
    limiter: Limiter,
    failures: u64,
    window_start: Instant,
    flagged: bool,
    last_seen: Instant,
}

/// Join-attempt limits and the at-risk signal. See the module docs.
pub struct JoinGuard {
    limits: GuardLimits,
    origin: Instant,
    clock: EventClock,
    sources: HashMap<SourceKey, Source>,
    meetings: HashMap<MeetingKey, MeetingWindow>,
}

impl std::fmt::Debug for JoinGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JoinGuard")
            .field("sources", &self.sources.len())
            .field("meetings", &self.meetings.len())
            .finish()
    }
}

/// The overflow meeting key (all meetings that found the table full).
const OVERFLOW_MEETING: MeetingKey = [0xff; 16];

fn quota(per_minute: u32) -> Quota {
    let n = NonZeroU32::new(per_minute.max(1)).unwrap_or(NonZeroU32::MIN);
    Quota::per_minute(n)
}

impl JoinGuard {
    /// A guard with no history; `now` anchors its clock.
    pub fn new(limits: GuardLimits, now: Instant) -> Self {
        Self {
            limits,
            origin: now,
            clock: EventClock {
                nanos: Arc::new(AtomicU64::new(0)),
            },
            sources: HashMap::new(),
            meetings: HashMap::new(),
        }
    }

    fn tick(&self, now: Instant) {
        let nanos = now.saturating_duration_since(self.origin).as_nanos() as u64;
        self.clock.nanos.fetch_max(nanos, Ordering::Relaxed);
    }

    /// Whether a join attempt from `source` on `meeting` may proceed at `now`; counts
    /// it against both budgets.
    pub fn check(
        &mut self,
        source: SourceKey,
        meeting: MeetingKey,
        now: Instant,
    ) -> Result<(), Refusal> {
        self.tick(now);
        let per_source = self.limits.per_source_per_minute;
        let clock = self.clock.clone();
        let key = self.room_for_source(source, now);
        let entry = self.sources.entry(key).or_insert_with(|| Source {
            limiter: RateLimiter::direct_with_clock(quota(per_source), clock),
            failures: 0,
            blocked_until: now,
            last_seen: now,
            last_failure: None,
        });
        entry.last_seen = now;
        if entry.blocked_until > now {
            return Err(Refusal::Source(entry.blocked_until - now));
        }
        if let Err(not_until) = entry.limiter.check() {
            return Err(Refusal::Source(not_until.wait_time_from(self.clock.now())));
        }
        let window = self.window(meeting, now);
        if let Err(not_until) = window.limiter.check() {
            let wait = not_until.wait_time_from(self.clock.now());
            return Err(Refusal::Meeting(wait));
        }
        Ok(())
    }

    /// Records a failed attempt (bad passcode, unknown meeting, bad token): the
    /// source's back-off grows, and the meeting's failure count too. Returns the
    /// at-risk signal when this failure crosses the threshold.
    pub fn record_failure(
        &mut self,
        source: SourceKey,
        meeting: MeetingKey,
        now: Instant,
    ) -> Option<AtRisk> {
        self.tick(now);
        let limits = self.limits;
        let key = if self.sources.contains_key(&source) {
            source
        } else {
            SourceKey::Overflow
        };
        if let Some(s) = self.sources.get_mut(&key) {
            s.failures = s.failures.saturating_add(1);
            s.last_failure = Some(now);
            if s.failures > limits.free_failures {
                let exp = (s.failures - limits.free_failures - 1).min(20);
                let wait = limits
                    .backoff_base
                    .saturating_mul(1u32 << exp)
                    .min(limits.backoff_max);
                s.blocked_until = now + wait;
            }
        }
        self.count_against(meeting, now)
    }

    /// Records an attempt turned away before it was checked (over a budget or during
    /// back-off): not held against the source again, but counted for the meeting, so
    /// a throttled war-dialer still flags its target.
    pub fn record_refused(&mut self, meeting: MeetingKey, now: Instant) -> Option<AtRisk> {
        self.tick(now);
        self.count_against(meeting, now)
    }

    fn count_against(&mut self, meeting: MeetingKey, now: Instant) -> Option<AtRisk> {
        let limits = self.limits;
        let w = self.window(meeting, now);
        if now.saturating_duration_since(w.window_start) > limits.at_risk_window {
            w.window_start = now;
            w.failures = 0;
            w.flagged = false;
        }
        w.failures += 1;
        if !w.flagged && w.failures >= u64::from(limits.at_risk_failures) {
            w.flagged = true;
            return Some(AtRisk {
                failed_attempts: w.failures,
            });
        }
        None
    }

    /// Whether `source` is inside a back-off it was already told about.
    pub fn backing_off(&self, source: SourceKey, now: Instant) -> bool {
        self.sources
            .get(&source)
            .is_some_and(|s| s.blocked_until > now)
    }

    /// Records a successful join. The source's failures are forgiven only if its last
    /// failure is an at-risk window old: otherwise a guesser holding one valid join
    /// (its own meeting) could interleave it with guesses and never back off.
    pub fn record_success(&mut self, source: SourceKey, now: Instant) {
        let window = self.limits.at_risk_window;
        if let Some(s) = self.sources.get_mut(&source) {
            if s.last_failure
                .is_none_or(|at| now.saturating_duration_since(at) >= window)
            {
                s.failures = 0;
            }
        }
    }

    /// Meetings flagged at risk whose window is still open at `now`.
    pub fn at_risk(&self, now: Instant) -> usize {
        self.meetings
            .values()
            .filter(|w| {
                w.flagged
                    && now.saturating_duration_since(w.window_start) <= self.limits.at_risk_window
            })
            .count()
    }

    /// Sources and meetings tracked.
    pub fn tracked(&self) -> (usize, usize) {
        (self.sources.len(), self.meetings.len())
    }

    /// Forgets entries idle for longer than the longest back-off and the at-risk window.
    pub fn sweep(&mut self, now: Instant) {
        let idle = self.limits.backoff_max.max(self.limits.at_risk_window);
        self.sources.retain(|_, s| {
            s.blocked_until > now || now.saturating_duration_since(s.last_seen) < idle
        });
        self.meetings
            .retain(|_, w| now.saturating_duration_since(w.last_seen) < idle);
    }

    fn room_for_source(&mut self, source: SourceKey, now: Instant) -> SourceKey {
        if self.sources.contains_key(&source) || self.sources.len() < self.limits.max_tracked {
            return source;
        }
        self.sweep(now);
        if self.sources.len() < self.limits.max_tracked {
            source
        } else {
            SourceKey::Overflow
        }
    }

    fn window(&mut self, meeting: MeetingKey, now: Instant) -> &mut MeetingWindow {
        let mut key = meeting;
        if !self.meetings.contains_key(&key) && self.meetings.len() >= self.limits.max_tracked {
            self.sweep(now);
            if self.meetings.len() >= self.limits.max_tracked {
                key = OVERFLOW_MEETING;
            }
        }
        let per_meeting = self.limits.per_meeting_per_minute;
        let clock = self.clock.clone();
        let w = self.meetings.entry(key).or_insert_with(|| MeetingWindow {
            limiter: RateLimiter::direct_with_clock(quota(per_meeting), clock),
            failures: 0,
            window_start: now,
            flagged: false,
            last_seen: now,
        });
        w.last_seen = now;
        w
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const M: MeetingKey = [1; 16];

    fn src(n: u8) -> SourceKey {
        SourceKey::from(IpAddr::from([127, 0, 0, n]))
    }

    #[test]
    fn failures_back_off_exponentially_and_a_success_forgives() {
        let limits = GuardLimits::default();
        let t0 = Instant::now();
        let mut g = JoinGuard::new(limits, t0);
        let mut now = t0;
        let mut waits = Vec::new();
        for _ in 0..8 {
            // Wait out whatever back-off is in force, then fail again.
            if let Err(r) = g.check(src(1), M, now) {
                waits.push(r.retry_after());
                now += r.retry_after();
                g.check(src(1), M, now).unwrap();
            }
            g.record_failure(src(1), M, now);
        }
        assert_eq!(waits.len(), 8 - 1 - limits.free_failures as usize);
        for pair in waits.windows(2) {
            assert!(
                pair[1] >= pair[0] * 2 - Duration::from_millis(1),
                "{waits:?}"
            );
        }
        // Another source is not affected.
        g.check(src(2), M, now).unwrap();
        now += limits.backoff_max;
        g.record_success(src(1), now);
        g.check(src(1), M, now).unwrap();
        g.record_failure(src(1), M, now);
        g.check(src(1), M, now).unwrap();
    }

    #[test]
    fn a_success_between_guesses_does_not_reset_the_back_off() {
        let limits = GuardLimits::default();
        let t0 = Instant::now();
        let mut g = JoinGuard::new(limits, t0);
        let mut now = t0;
        let mut backed_off = 0;
        for _ in 0..10 {
            match g.check(src(1), M, now) {
                Err(r) => {
                    backed_off += 1;
                    now += r.retry_after();
                }
                Ok(()) => {
                    g.record_failure(src(1), M, now);
                    // The guesser's own meeting admits it right after.
                    g.record_success(src(1), now);
                }
            }
        }
        assert!(
            backed_off >= 3,
            "successes reset the back-off: {backed_off}"
        );
    }

    #[test]
    fn the_per_source_budget_answers_with_a_retry_after() {
        let limits = GuardLimits {
            per_source_per_minute: 10,
            ..GuardLimits::default()
        };
        let t0 = Instant::now();
        let mut g = JoinGuard::new(limits, t0);
        for i in 0..10u8 {
            g.check(src(1), [i; 16], t0).unwrap();
        }
        let Err(Refusal::Source(wait)) = g.check(src(1), [99; 16], t0) else {
            panic!("the 11th attempt within a minute must be refused");
        };
        assert!(wait > Duration::ZERO && wait <= Duration::from_secs(6));
        g.check(src(1), [99; 16], t0 + wait).unwrap();
    }

    #[test]
    fn many_failures_on_one_meeting_flag_it_once_per_window() {
        let limits = GuardLimits {
            at_risk_failures: 20,
            ..GuardLimits::default()
        };
        let t0 = Instant::now();
        let mut g = JoinGuard::new(limits, t0);
        let mut flagged = 0;
        for i in 0..60u8 {
            if g.record_failure(src(i), M, t0).is_some() {
                flagged += 1;
            }
        }
        assert_eq!(flagged, 1);
        assert_eq!(g.at_risk(t0), 1);
        assert_eq!(g.at_risk(t0 + limits.at_risk_window * 2), 0);
        let later = t0 + limits.at_risk_window * 2;
        let again: usize = (0..20u8)
            .filter(|&i| g.record_failure(src(i), M, later).is_some())
            .count();
        assert_eq!(again, 1, "a new window flags again");
    }

    #[test]
    fn tables_stay_bounded_under_a_flood_of_fresh_sources() {
        let limits = GuardLimits {
            max_tracked: 100,
            per_source_per_minute: 5,
            ..GuardLimits::default()
        };
        let t0 = Instant::now();
        let mut g = JoinGuard::new(limits, t0);
        let mut refused = 0;
        for i in 0..5_000u32 {
            let ip = IpAddr::from(std::net::Ipv6Addr::from(u128::from(i) << 64));
            let key = SourceKey::from(ip);
            if g.check(key, [(i % 200) as u8; 16], t0).is_err() {
                refused += 1;
            }
        }
        let (sources, meetings) = g.tracked();
        assert!(sources <= 101 && meetings <= 101, "{sources} {meetings}");
        assert!(
            refused > 4_000,
            "overflow sources share one budget: {refused}"
        );
    }

    #[test]
    fn ipv6_sources_are_grouped_by_slash_64() {
        let a: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(SourceKey::from(a), SourceKey::from(b));
        assert_ne!(SourceKey::from(a), SourceKey::from(c));
        let mapped: IpAddr = "::ffff:10.0.0.1".parse().unwrap();
        assert_eq!(SourceKey::from(mapped), SourceKey::V4([10, 0, 0, 1]));
    }
}
