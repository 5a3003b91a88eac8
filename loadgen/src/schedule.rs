//! The run's plan, sans-IO: who joins which meeting when, in what role, when they
//! leave and rejoin, and how many objects each will send. Pure and seeded: the
//! same scenario and seed give the same plan on every machine, which is what makes
//! `--shard I/N` and the count checks work. The async driver only executes it.

use std::time::Duration;

use crate::scenario::{Arrival, Scenario, SizeDist};

/// At most this many stints (join..leave) per participant when churning.
const MAX_STINTS: usize = 16;

/// SplitMix64: small, seedable, good enough for load shapes (not for keys).
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator for `seed`, decorrelated from other streams by `stream`.
    pub fn new(seed: u64, stream: u64) -> Rng {
        let mut r = Rng(seed ^ stream.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        r.next_u64();
        r
    }
    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
    /// Uniform on `min..=max`.
    pub fn range(&mut self, min: usize, max: usize) -> usize {
        min + (self.next_u64() % (max - min + 1) as u64) as usize
    }
}

/// Which part of a scenario this process runs: meetings with `index % count == index`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    /// This part, `0..count`.
    pub index: usize,
    /// Number of parts.
    pub count: usize,
}

impl Shard {
    /// The whole scenario.
    pub const ALL: Shard = Shard { index: 0, count: 1 };

    /// Parses `I/N`.
    pub fn parse(text: &str) -> Result<Shard, String> {
        let (i, n) = text
            .split_once('/')
            .ok_or_else(|| format!("shard `{text}` is not I/N"))?;
        let index = i.trim().parse().map_err(|_| format!("shard index `{i}`"))?;
        let count: usize = n.trim().parse().map_err(|_| format!("shard count `{n}`"))?;
        if count == 0 || index >= count {
            return Err(format!("shard {index}/{count}: need 0 <= I < N"));
        }
        Ok(Shard { index, count })
    }
}

/// What one participant does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Role {
    /// Sends audio, and video at every simulcast layer (the active-speaker model).
    pub speaker: bool,
    /// Publishes anything (webinar viewers do not).
    pub publisher: bool,
    /// Camera on: publishes video.
    pub camera: bool,
    /// Shares a screen.
    pub screen: bool,
}

/// One connection's life: join at `join`, leave at `leave` (offsets from the start).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stint {
    /// When to start joining.
    pub join: Duration,
    /// When to leave (the last stint leaves when media stops).
    pub leave: Duration,
}

/// One participant of the plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Slot {
    /// Meeting number in the whole scenario.
    pub meeting: usize,
    /// Seat in the meeting (0 is the first speaker).
    pub seat: usize,
    /// What it sends.
    pub role: Role,
    /// Its connections, in order.
    pub stints: Vec<Stint>,
}

/// The plan of a run (or of one shard of it).
#[derive(Debug, Clone, PartialEq)]
pub struct Schedule {
    /// Participants in this shard.
    pub slots: Vec<Slot>,
    /// Meetings in this shard.
    pub meetings: Vec<usize>,
    /// Media stops at this offset from the start.
    pub media_end: Duration,
}

/// Objects and joins the plan will produce, to check a run against.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Expected {
    /// Joins (one per stint).
    pub joins: u64,
    /// Audio objects sent.
    pub audio: u64,
    /// Video objects sent (all layers).
    pub video: u64,
    /// Screen objects sent.
    pub screen: u64,
}

/// Ticks of a `period` grid anchored at `from` that fall before `until`.
pub fn ticks(from: Duration, until: Duration, period: Duration) -> u64 {
    if until <= from || period.is_zero() {
        return 0;
    }
    let span = (until - from).as_nanos();
    span.div_ceil(period.as_nanos()) as u64
}

/// The audio period of a scenario.
pub fn audio_period(s: &Scenario) -> Duration {
    Duration::from_nanos(1_000_000_000 / u64::from(s.audio_pps.max(1)))
}

/// The video frame period of a scenario.
pub fn video_period(s: &Scenario) -> Duration {
    Duration::from_nanos(1_000_000_000 / u64::from(s.video_fps.max(1)))
}

/// Frame instants of a screen share between `from` and `until`: bursts at
/// `burst_fps` for `burst` every `every`, one frame a second in between.
/// Returns offsets from `from` and whether each frame starts a new group.
pub fn screen_frames(s: &Scenario, from: Duration, until: Duration) -> Vec<(Duration, bool)> {
    let Some(sc) = &s.screen else {
        return Vec::new();
    };
    let mut out = Vec::new();
    let burst_period = Duration::from_nanos(1_000_000_000 / u64::from(sc.burst_fps.max(1)));
    let mut cycle = Duration::ZERO;
    while from + cycle < until && out.len() < 1_000_000 {
        let mut t = Duration::ZERO;
        while t < sc.burst && from + cycle + t < until {
            out.push((cycle + t, t.is_zero()));
            t += burst_period;
        }
        let mut t = sc.burst.max(Duration::from_secs(1));
        while t < sc.every && from + cycle + t < until {
            out.push((cycle + t, false));
            t += Duration::from_secs(1);
        }
        cycle += sc.every;
    }
    out
}

fn meeting_size(s: &Scenario, rng: &mut Rng) -> (usize, Option<usize>) {
    match &s.size {
        SizeDist::Fixed(n) => (*n, None),
        SizeDist::Uniform { min, max } => (rng.range(*min, *max), None),
        SizeDist::Zipf { min, max, exponent } => {
            let weights: Vec<f64> = (0..=max - min)
                .map(|k| 1.0 / ((k + 1) as f64).powf(*exponent))
                .collect();
            (min + pick(&weights, rng), None)
        }
        SizeDist::Mix(buckets) => {
            let weights: Vec<f64> = buckets.iter().map(|b| b.share.max(0.0)).collect();
            let b = &buckets[pick(&weights, rng)];
            (rng.range(b.min, b.max), None)
        }
        SizeDist::Webinar {
            publishers,
            viewers,
        } => {
            let p = rng.range(publishers.0, publishers.1);
            (p + rng.range(viewers.0, viewers.1), Some(p))
        }
    }
}

fn pick(weights: &[f64], rng: &mut Rng) -> usize {
    let total: f64 = weights.iter().sum();
    let mut x = rng.unit() * total;
    for (i, w) in weights.iter().enumerate() {
        if x < *w {
            return i;
        }
        x -= w;
    }
    weights.len() - 1
}

/// Arrival offsets for `n` participants, in arrival order, and the span they cover.
fn arrivals(s: &Scenario, n: usize, rng: &mut Rng) -> Vec<Duration> {
    let mut times: Vec<Duration> = match &s.arrival {
        Arrival::Storm { window } => (0..n).map(|_| window.mul_f64(rng.unit())).collect(),
        Arrival::Ramp { over } => (0..n).map(|i| over.mul_f64(i as f64 / n as f64)).collect(),
        Arrival::Spike { at, jitter } => (0..n)
            .map(|_| {
                let x = rng.unit() + rng.unit() - 1.0;
                let t = at.as_secs_f64() + x * jitter.as_secs_f64();
                Duration::from_secs_f64(t.max(0.0))
            })
            .collect(),
        Arrival::Poisson { rate } => {
            let mut t = 0.0f64;
            (0..n)
                .map(|_| {
                    let at = t;
                    t += -(1.0 - rng.unit()).ln() / rate;
                    Duration::from_secs_f64(at)
                })
                .collect()
        }
    };
    times.sort();
    times
}

/// Builds the whole scenario's plan and keeps `shard`'s meetings.
pub fn build(s: &Scenario, shard: Shard) -> Schedule {
    let mut sizes = Vec::with_capacity(s.meetings);
    let mut slots = Vec::new();
    for m in 0..s.meetings {
        let mut rng = Rng::new(s.seed, m as u64);
        let (size, webinar_publishers) = meeting_size(s, &mut rng);
        let sharing = s.screen.as_ref().is_some_and(|sc| rng.unit() < sc.meetings);
        sizes.push(size);
        for seat in 0..size {
            let publisher = webinar_publishers.is_none_or(|p| seat < p);
            let speaker = publisher
                && match (webinar_publishers, s.speakers) {
                    (Some(_), _) | (None, None) => true,
                    (None, Some(k)) => seat < k,
                };
            let camera = publisher && rng.unit() < s.camera_on;
            let role = Role {
                speaker,
                publisher,
                camera,
                screen: sharing && seat == 0,
            };
            slots.push(Slot {
                meeting: m,
                seat,
                role,
                stints: Vec::new(),
            });
        }
    }
    // Arrival instants are assigned to participants in a seeded shuffled order, so
    // meetings fill in interleaved, as people arrive in real life.
    let mut order_rng = Rng::new(s.seed, u64::MAX);
    let times = arrivals(s, slots.len(), &mut order_rng);
    let mut order: Vec<usize> = (0..slots.len()).collect();
    for i in (1..order.len()).rev() {
        order.swap(i, (order_rng.next_u64() % (i as u64 + 1)) as usize);
    }
    let span = times.last().copied().unwrap_or_default();
    let media_end = span + s.duration;
    for (k, &i) in order.iter().enumerate() {
        let slot = &mut slots[i];
        let mut rng = Rng::new(s.seed, (1u64 << 40) + i as u64);
        let mut join = times[k];
        loop {
            let leave = if s.churn_per_min > 0.0 && slot.stints.len() + 1 < MAX_STINTS {
                let stay = -(1.0 - rng.unit()).ln() * 60.0 / s.churn_per_min;
                (join + Duration::from_secs_f64(stay)).min(media_end)
            } else {
                media_end
            };
            slot.stints.push(Stint { join, leave });
            join = leave + s.rejoin_after;
            if leave >= media_end || join >= media_end {
                break;
            }
        }
        if let Some(last) = slot.stints.last_mut() {
            last.leave = media_end;
        }
    }
    let keep = |m: usize| m % shard.count == shard.index;
    Schedule {
        slots: slots.into_iter().filter(|p| keep(p.meeting)).collect(),
        meetings: (0..s.meetings).filter(|&m| keep(m)).collect(),
        media_end,
    }
}

impl Schedule {
    /// Participants in the plan.
    pub fn participants(&self) -> usize {
        self.slots.len()
    }

    /// Joins and objects the plan will produce if every join succeeds.
    pub fn expected(&self, s: &Scenario) -> Expected {
        let mut e = Expected::default();
        for slot in &self.slots {
            for st in &slot.stints {
                e.joins += 1;
                let r = slot.role;
                if r.speaker {
                    e.audio += ticks(st.join, st.leave, audio_period(s));
                }
                if r.camera {
                    let layers = if r.speaker { s.layer_kbps.len() } else { 1 };
                    e.video += layers as u64 * ticks(st.join, st.leave, video_period(s));
                }
                if r.screen {
                    e.screen += screen_frames(s, st.join, st.leave).len() as u64;
                }
            }
        }
        e
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario::MixBucket;

    #[test]
    fn ticks_count_the_grid_points_before_the_end() {
        let ms = Duration::from_millis;
        assert_eq!(ticks(ms(0), ms(1000), ms(20)), 50);
        assert_eq!(ticks(ms(0), ms(1001), ms(20)), 51);
        assert_eq!(ticks(ms(5), ms(5), ms(20)), 0);
    }

    #[test]
    fn same_seed_same_plan_and_shards_partition_it() {
        let s = Scenario {
            meetings: 9,
            size: SizeDist::Mix(vec![
                MixBucket {
                    share: 0.7,
                    min: 2,
                    max: 4,
                },
                MixBucket {
                    share: 0.3,
                    min: 5,
                    max: 20,
                },
            ]),
            arrival: Arrival::Poisson { rate: 50.0 },
            churn_per_min: 6.0,
            ..Scenario::default()
        };
        let all = build(&s, Shard::ALL);
        assert_eq!(all, build(&s, Shard::ALL));
        let a = build(&s, Shard { index: 0, count: 2 });
        let b = build(&s, Shard { index: 1, count: 2 });
        assert_eq!(a.participants() + b.participants(), all.participants());
        let (ea, eb, e) = (a.expected(&s), b.expected(&s), all.expected(&s));
        assert_eq!(ea.joins + eb.joins, e.joins);
        assert_eq!(ea.audio + eb.audio, e.audio);
        assert_eq!(ea.video + eb.video, e.video);
        // Churn gives some participants more than one stint, all inside the run.
        assert!(e.joins > all.participants() as u64);
        for slot in &all.slots {
            for w in slot.stints.windows(2) {
                assert!(w[0].leave < w[1].join);
            }
            assert_eq!(slot.stints.last().unwrap().leave, all.media_end);
        }
    }

    #[test]
    fn webinar_viewers_publish_nothing_and_speakers_are_limited() {
        let s = Scenario {
            meetings: 3,
            size: SizeDist::Webinar {
                publishers: (1, 3),
                viewers: (100, 300),
            },
            ..Scenario::default()
        };
        let plan = build(&s, Shard::ALL);
        for m in 0..3 {
            let seats: Vec<_> = plan.slots.iter().filter(|p| p.meeting == m).collect();
            let publishers = seats.iter().filter(|p| p.role.publisher).count();
            assert!((1..=3).contains(&publishers));
            assert!((101..=303).contains(&seats.len()));
        }
        let s = Scenario {
            speakers: Some(1),
            camera_on: 0.0,
            size: SizeDist::Fixed(5),
            ..Scenario::default()
        };
        let plan = build(&s, Shard::ALL);
        let speakers = plan.slots.iter().filter(|p| p.role.speaker).count();
        assert_eq!(speakers, s.meetings);
        assert_eq!(plan.slots.iter().filter(|p| p.role.camera).count(), 0);
        let e = plan.expected(&s);
        assert_eq!(e.video, 0);
        assert!(e.audio > 0);
    }

    #[test]
    fn arrivals_follow_their_shape() {
        let base = Scenario {
            meetings: 50,
            size: SizeDist::Fixed(4),
            ..Scenario::default()
        };
        let first_joins = |s: &Scenario| -> Vec<f64> {
            let p = build(s, Shard::ALL);
            p.slots
                .iter()
                .map(|x| x.stints[0].join.as_secs_f64())
                .collect()
        };
        let spike = Scenario {
            arrival: Arrival::Spike {
                at: Duration::from_secs(10),
                jitter: Duration::from_secs(2),
            },
            ..base.clone()
        };
        let t = first_joins(&spike);
        assert!(t.iter().all(|&x| (8.0..=12.0).contains(&x)));
        let near = t.iter().filter(|&&x| (x - 10.0).abs() < 1.0).count();
        assert!(
            near > t.len() / 2,
            "triangular: most within half the jitter"
        );
        let poisson = Scenario {
            arrival: Arrival::Poisson { rate: 100.0 },
            ..base.clone()
        };
        let last = first_joins(&poisson).into_iter().fold(0.0, f64::max);
        // 200 arrivals at 100/s: about 2 s.
        assert!((1.4..2.6).contains(&last), "{last}");
        let zipf = Scenario {
            size: SizeDist::Zipf {
                min: 2,
                max: 50,
                exponent: 1.2,
            },
            ..base
        };
        let p = build(&zipf, Shard::ALL);
        let twos = (0..50).filter(|&m| p.slots.iter().filter(|x| x.meeting == m).count() == 2);
        assert!(twos.count() > 10, "the smallest size is the most common");
    }

    #[test]
    fn screen_bursts_open_groups() {
        let s = Scenario {
            screen: Some(crate::scenario::ScreenShare {
                meetings: 1.0,
                kbps: 800,
                burst_fps: 10,
                burst: Duration::from_secs(1),
                every: Duration::from_secs(5),
            }),
            ..Scenario::default()
        };
        let f = screen_frames(&s, Duration::ZERO, Duration::from_secs(10));
        // Per 5 s cycle: 10 burst frames + 4 idle frames.
        assert_eq!(f.len(), 28);
        assert_eq!(f.iter().filter(|x| x.1).count(), 2);
    }
}
