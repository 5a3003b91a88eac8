//! What a load run simulates: meetings, participants and their media, sans-IO.

use std::time::Duration;

use anyhow::bail;

/// A load scenario. Defaults are sized so relay and loadgen together stay well under
/// a 2-core machine's limit (roughly 200,000 QUIC packets/s on loopback).
#[derive(Debug, Clone, PartialEq)]
pub struct Scenario {
    /// Number of meetings.
    pub meetings: usize,
    /// Participants in each meeting.
    pub participants: usize,
    /// How long media flows once everyone has joined.
    pub duration: Duration,
    /// Joins are spread evenly over this window (a storm is a short one).
    pub join_window: Duration,
    /// Audio packets per second per participant (20 ms frames = 50).
    pub audio_pps: u32,
    /// Audio payload bytes before sealing (Opus at ~32 kbit/s is ~80 bytes per 20 ms).
    pub audio_bytes: usize,
    /// Video frames per second.
    pub video_fps: u32,
    /// Bitrate of each simulcast layer in kbit/s, lowest first.
    pub layer_kbps: Vec<u32>,
    /// Layer every subscriber asks for.
    pub subscribe_layer: u8,
    /// A new group (keyframe) at least this often.
    pub keyframe_interval: Duration,
    /// Client UDP sockets (QUIC endpoints) the participants are spread over.
    pub client_sockets: usize,
    /// Meeting IDs are this prefix followed by the meeting's number (zero-padded to
    /// at least 11 characters in all); `None`: a prefix made from the process ID.
    /// Lets an outside client join a loadgen meeting.
    pub meeting_prefix: Option<String>,
    /// Passcode of every meeting; `None`: `pass-<meeting number>`.
    pub passcode: Option<String>,
}

impl Default for Scenario {
    fn default() -> Self {
        Self {
            meetings: 20,
            participants: 6,
            duration: Duration::from_secs(30),
            join_window: Duration::from_secs(2),
            audio_pps: 50,
            audio_bytes: 80,
            video_fps: 15,
            layer_kbps: vec![150, 500],
            subscribe_layer: 0,
            keyframe_interval: Duration::from_secs(2),
            client_sockets: 8,
            meeting_prefix: None,
            passcode: None,
        }
    }
}

impl Scenario {
    /// Total participants.
    pub fn total_participants(&self) -> usize {
        self.meetings * self.participants
    }

    /// Video payload bytes of a frame on `layer`: keyframes are 5× a delta frame,
    /// and the average over a group matches the layer's bitrate.
    pub fn frame_bytes(&self, layer: usize, keyframe: bool) -> usize {
        let kbps = self.layer_kbps.get(layer).copied().unwrap_or(0) as usize;
        let per_frame = kbps * 1000 / 8 / self.video_fps.max(1) as usize;
        let frames_per_group =
            (self.keyframe_interval.as_secs_f64() * f64::from(self.video_fps)).max(1.0);
        // Solve k*5d + (n-1)*d = n*avg for d, with one keyframe per group.
        let delta = (per_frame as f64 * frames_per_group / (frames_per_group + 4.0)) as usize;
        if keyframe { delta * 5 } else { delta }.max(16)
    }

    /// Checks every field; errors name it.
    pub fn validate(&self) -> anyhow::Result<()> {
        if self.meetings == 0 {
            bail!("meetings must be at least 1");
        }
        if self.participants < 2 {
            bail!("participants must be at least 2 (someone has to listen)");
        }
        if self.duration.is_zero() || self.duration > Duration::from_secs(24 * 3600) {
            bail!("duration must be between 1 s and 24 h");
        }
        if !(1..=100).contains(&self.audio_pps) {
            bail!("audio_pps must be 1..=100");
        }
        if !(16..=1000).contains(&self.audio_bytes) {
            bail!("audio_bytes must be 16..=1000 (one datagram)");
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
}

impl Scenario {
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
            participants: 1,
            ..Scenario::default()
        };
        assert!(s
            .validate()
            .unwrap_err()
            .to_string()
            .contains("participants"));
    }
}
