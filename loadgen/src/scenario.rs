//! What a load run simulates: meetings, participants, their media, arrivals and the
//! pass/fail thresholds. Plain data; [`crate::schedule`] turns it into a seeded plan.

use std::time::Duration;

use anyhow::bail;

use crate::threshold::Threshold;

/// How many participants each meeting has.
#[derive(Debug, Clone, PartialEq)]
pub enum SizeDist {
    /// Every meeting has this many.
    Fixed(usize),
    /// Uniform on `min..=max`.
    Uniform {
        /// Smallest meeting.
        min: usize,
        /// Largest meeting.
        max: usize,
    },
    /// Zipf on `min..=max`: size `min + k` has weight `1 / (k + 1)^exponent`.
    Zipf {
        /// Smallest meeting.
        min: usize,
        /// Largest meeting.
        max: usize,
        /// Skew; 1.0 is classic Zipf.
        exponent: f64,
    },
    /// Buckets picked by share, then uniform inside the bucket.
    Mix(Vec<MixBucket>),
    /// A webinar: a few publishers and many viewers who publish nothing.
    Webinar {
        /// Publishers per webinar (they speak and show video).
        publishers: (usize, usize),
        /// Viewers per webinar.
        viewers: (usize, usize),
    },
}

/// One bucket of [`SizeDist::Mix`].
#[derive(Debug, Clone, PartialEq)]
pub struct MixBucket {
    /// Relative weight (shares need not add up to 1).
    pub share: f64,
    /// Smallest meeting in the bucket.
    pub min: usize,
    /// Largest meeting in the bucket.
    pub max: usize,
}

/// When participants arrive.
#[derive(Debug, Clone, PartialEq)]
pub enum Arrival {
    /// Everyone at random instants within `window` (a storm when short).
    Storm {
        /// The window.
        window: Duration,
    },
    /// Top-of-the-hour: around `at`, spread ±`jitter` (triangular).
    Spike {
        /// Offset of the spike from the run's start.
        at: Duration,
        /// Half-width of the spread.
        jitter: Duration,
    },
    /// Evenly spaced over `over` (load rises linearly).
    Ramp {
        /// The ramp's length.
        over: Duration,
    },
    /// A Poisson process at `rate` joins per second.
    Poisson {
        /// Mean joins per second.
        rate: f64,
    },
}

/// Which video each participant receives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Subscribe {
    /// Every published video.
    All,
    /// A gallery of at most N tiles: speakers at the subscribed layer first, then others at layer 0.
    Gallery(usize),
    /// Only the speakers' video.
    SpeakerOnly,
}

/// Bursty screen sharing: one sharer in a share of meetings.
#[derive(Debug, Clone, PartialEq)]
pub struct ScreenShare {
    /// Share of meetings (0..=1) where someone shares a screen.
    pub meetings: f64,
    /// Bitrate during a burst, kbit/s.
    pub kbps: u32,
    /// Frames per second during a burst (a slide change, a scroll).
    pub burst_fps: u32,
    /// Burst length.
    pub burst: Duration,
    /// A burst (and a new group) starts this often; between bursts, 1 frame per second.
    pub every: Duration,
}

/// A load scenario. Defaults are sized so relay and loadgen together stay well under
/// a 2-core machine's limit (roughly 200,000 QUIC packets/s on loopback).
#[derive(Debug, Clone, PartialEq)]
pub struct Scenario {
    /// Name (from the file), for the report.
    pub name: String,
    /// Seed of every random choice (sizes, roles, arrival times, churn).
    pub seed: u64,
    /// Number of meetings.
    pub meetings: usize,
    /// Participants per meeting.
    pub size: SizeDist,
    /// How long media flows after the last scheduled arrival.
    pub duration: Duration,
    /// When participants join.
    pub arrival: Arrival,
    /// Leaves per participant per minute (each followed by a rejoin); 0 = no churn.
    pub churn_per_min: f64,
    /// Time between a churned participant's leave and its rejoin.
    pub rejoin_after: Duration,
    /// Speakers per meeting (they send audio and the full video layers); `None`: everyone.
    pub speakers: Option<usize>,
    /// Audio packets per second per speaker (20 ms frames = 50).
    pub audio_pps: u32,
    /// Audio payload bytes before sealing (Opus at ~32 kbit/s is ~80 bytes per 20 ms).
    pub audio_bytes: usize,
    /// Share of publishers (0..=1) with the camera on (speakers included).
    pub camera_on: f64,
    /// Video frames per second.
    pub video_fps: u32,
    /// Bitrate of each simulcast layer in kbit/s, lowest first.
    pub layer_kbps: Vec<u32>,
    /// Layer subscribers ask for from speakers (others are received at layer 0).
    pub subscribe_layer: u8,
    /// A new group (keyframe) at least this often.
    pub keyframe_interval: Duration,
    /// Which video participants receive.
    pub subscribe: Subscribe,
    /// Screen sharing, if any.
    pub screen: Option<ScreenShare>,
    /// Client UDP sockets (QUIC endpoints) the participants are spread over.
    pub client_sockets: usize,
    /// Meeting IDs are this prefix followed by the meeting's number (zero-padded to
    /// at least 11 characters in all); `None`: a prefix made from the process ID.
    /// Lets an outside client join a loadgen meeting.
    pub meeting_prefix: Option<String>,
    /// Passcode of every meeting; `None`: `pass-<meeting number>`.
    pub passcode: Option<String>,
    /// Guessing attackers running alongside the meetings.
    pub attackers: Option<crate::attack::Attackers>,
    /// Pass/fail conditions checked on the report.
    pub thresholds: Vec<Threshold>,
    /// Sections the file asked for that need relay support not present yet
    /// (host actions, attackers); reported, not run.
    pub pending: Vec<String>,
}

impl Default for Scenario {
    fn default() -> Self {
        Self {
            name: "flags".into(),
            seed: 1,
            meetings: 20,
            size: SizeDist::Fixed(6),
            duration: Duration::from_secs(30),
            arrival: Arrival::Ramp {
                over: Duration::from_secs(2),
            },
            churn_per_min: 0.0,
            rejoin_after: Duration::from_secs(2),
            speakers: None,
            audio_pps: 50,
            audio_bytes: 80,
            camera_on: 1.0,
            video_fps: 15,
            layer_kbps: vec![150, 500],
            subscribe_layer: 0,
            keyframe_interval: Duration::from_secs(2),
            subscribe: Subscribe::All,
            screen: None,
            client_sockets: 8,
            meeting_prefix: None,
            passcode: None,
            attackers: None,
            thresholds: Vec::new(),
            pending: Vec::new(),
        }
    }
}

impl Scenario {
    /// Video payload bytes of a frame on `layer`: keyframes are 5× a delta frame,
    /// and the average over a group matches the layer's bitrate.
    pub fn frame_bytes(&self, layer: usize, keyframe: bool) -> usize {
        let kbps = self.layer_kbps.get(layer).copied().unwrap_or(0);
        frame_bytes(kbps, self.video_fps, self.keyframe_interval, keyframe)
    }

    /// Checks every field; errors name it.
    pub fn validate(&self) -> anyhow::Result<()> {
        if self.meetings == 0 || self.meetings > 1_000_000 {
            bail!("meetings must be 1..=1000000");
        }
        self.validate_size()?;
        if self.duration.is_zero() || self.duration > Duration::from_secs(24 * 3600) {
            bail!("duration must be between 1 s and 24 h");
        }
        match &self.arrival {
            Arrival::Poisson { rate } if !(*rate > 0.0 && rate.is_finite()) => {
                bail!("arrival.rate must be a positive number of joins per second")
            }
            _ => {}
        }
        if !(0.0..=60.0).contains(&self.churn_per_min) {
            bail!("churn_per_min must be 0..=60");
        }
        if !(1..=100).contains(&self.audio_pps) {
            bail!("audio_pps must be 1..=100");
        }
        if !(16..=1000).contains(&self.audio_bytes) {
            bail!("audio_bytes must be 16..=1000 (one datagram)");
        }
        if !(0.0..=1.0).contains(&self.camera_on) {
            bail!("camera_on must be a share in 0..=1");
        }
        if !(1..=60).contains(&self.video_fps) {
            bail!("video_fps must be 1..=60");
        }
        if self.layer_kbps.is_empty()
            || self.layer_kbps.len() > usize::from(orelay_proto::limits::MAX_LAYERS)
        {
            bail!(
                "layer_kbps must list 1 to {} layers",
                orelay_proto::limits::MAX_LAYERS
            );
        }
        if self.layer_kbps.iter().any(|&k| k == 0 || k > 20_000) {
            bail!("layer_kbps values must be 1..=20000");
        }
        if usize::from(self.subscribe_layer) >= self.layer_kbps.len() {
            bail!(
                "subscribe_layer {} does not exist (layers: {})",
                self.subscribe_layer,
                self.layer_kbps.len()
            );
        }
        if self.keyframe_interval < Duration::from_millis(100) {
            bail!("keyframe_interval must be at least 100 ms");
        }
        if let Some(sc) = &self.screen {
            if !(0.0..=1.0).contains(&sc.meetings) {
                bail!("screen.meetings must be a share in 0..=1");
            }
            if !(1..=60).contains(&sc.burst_fps) || !(1..=20_000).contains(&sc.kbps) {
                bail!("screen.burst_fps must be 1..=60 and screen.kbps 1..=20000");
            }
            if sc.every < Duration::from_millis(500) || sc.burst > sc.every {
                bail!("screen.every must be at least 500 ms and no shorter than screen.burst");
            }
        }
        if let Some(a) = &self.attackers {
            let rate_ok = a.rate > 0.0 && a.rate <= 10_000.0; // NaN fails
            if !(1..=16).contains(&a.sources) || !rate_ok {
                bail!("attackers: sources must be 1..=16 and guesses_per_s in (0, 10000]");
            }
        }
        if !(1..=256).contains(&self.client_sockets) {
            bail!("client_sockets must be 1..=256");
        }
        if let Some(prefix) = &self.meeting_prefix {
            let ok = prefix.len() <= 48
                && prefix
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
            if !ok {
                bail!("meeting_prefix must be at most 48 characters of [0-9A-Za-z_-]");
            }
        }
        if self.passcode.as_ref().is_some_and(|p| p.len() > 64) {
            bail!("passcode must be at most 64 bytes");
        }
        Ok(())
    }

    fn validate_size(&self) -> anyhow::Result<()> {
        const MAX: usize = 1000;
        let range = |what: &str, min: usize, max: usize, least: usize| {
            if min < least || max < min || max > MAX {
                bail!("{what} must satisfy {least} <= min <= max <= {MAX}");
            }
            Ok(())
        };
        match &self.size {
            SizeDist::Fixed(n) => range("size.participants", *n, *n, 2),
            SizeDist::Uniform { min, max } => range("size (uniform)", *min, *max, 2),
            SizeDist::Zipf { min, max, exponent } => {
                if !(0.0..=10.0).contains(exponent) {
                    bail!("size.exponent must be 0..=10");
                }
                range("size (zipf)", *min, *max, 2)
            }
            SizeDist::Mix(buckets) => {
                if buckets.is_empty() || buckets.iter().all(|b| b.share <= 0.0) {
                    bail!("size.mix must hold at least one bucket with a positive share");
                }
                for b in buckets {
                    if !(b.share >= 0.0 && b.share.is_finite()) {
                        bail!("size.mix shares must be non-negative numbers");
                    }
                    range("size.mix bucket", b.min, b.max, 2)?;
                }
                Ok(())
            }
            SizeDist::Webinar {
                publishers,
                viewers,
            } => {
                range("size.publishers", publishers.0, publishers.1, 1)?;
                range("size.viewers", viewers.0, viewers.1, 1)
            }
        }
    }

    /// The ID of meeting number `m` (at least 11 characters, as the relay requires).
    pub fn meeting_id(&self, m: usize, run_tag: u32) -> String {
        match &self.meeting_prefix {
            Some(prefix) => {
                let width = 11usize.saturating_sub(prefix.len()).max(1);
                format!("{prefix}{m:0width$}")
            }
            None => format!("{:05}{:06}{:04}", run_tag % 100_000, m, 0),
        }
    }

    /// The passcode of meeting number `m`.
    pub fn passcode(&self, m: usize) -> String {
        self.passcode.clone().unwrap_or_else(|| format!("pass-{m}"))
    }
}

/// Payload bytes of one frame at `kbps`: keyframes 5× a delta frame, the group's
/// average matching the bitrate.
pub fn frame_bytes(kbps: u32, fps: u32, keyframe_interval: Duration, keyframe: bool) -> usize {
    let per_frame = kbps as usize * 1000 / 8 / fps.max(1) as usize;
    let frames_per_group = (keyframe_interval.as_secs_f64() * f64::from(fps)).max(1.0);
    // Solve k*5d + (n-1)*d = n*avg for d, with one keyframe per group.
    let delta = (per_frame as f64 * frames_per_group / (frames_per_group + 4.0)) as usize;
    if keyframe { delta * 5 } else { delta }.max(16)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meeting_ids_from_a_prefix_are_long_enough_and_distinct() {
        let s = Scenario {
            meeting_prefix: Some("demo".into()),
            passcode: Some("sesame".into()),
            ..Scenario::default()
        };
        s.validate().unwrap();
        assert_eq!(s.meeting_id(0, 1), "demo0000000");
        assert_eq!(s.meeting_id(12, 1), "demo0000012");
        assert_eq!(s.passcode(3), "sesame");
        assert_eq!(Scenario::default().passcode(3), "pass-3");
        let bad = Scenario {
            meeting_prefix: Some("no spaces".into()),
            ..Scenario::default()
        };
        assert!(bad
            .validate()
            .unwrap_err()
            .to_string()
            .contains("meeting_prefix"));
    }

    #[test]
    fn default_is_valid_and_frames_match_bitrate() {
        let s = Scenario::default();
        s.validate().unwrap();
        let n = (s.keyframe_interval.as_secs_f64() * f64::from(s.video_fps)) as usize;
        let group = s.frame_bytes(0, true) + (n - 1) * s.frame_bytes(0, false);
        let kbps = group as f64 * 8.0 / s.keyframe_interval.as_secs_f64() / 1000.0;
        assert!((kbps - 150.0).abs() < 5.0, "{kbps}");
    }

    #[test]
    fn invalid_fields_are_named() {
        let s = Scenario {
            subscribe_layer: 3,
            ..Scenario::default()
        };
        assert!(s
            .validate()
            .unwrap_err()
            .to_string()
            .contains("subscribe_layer"));
        let s = Scenario {
            size: SizeDist::Fixed(1),
            ..Scenario::default()
        };
        assert!(s
            .validate()
            .unwrap_err()
            .to_string()
            .contains("participants"));
    }
}
