//! Forwarding decisions that do not depend on a meeting's membership, sans-IO: stream
//! priority, the publish grace for media that outruns its `Publish`, and the limit on
//! concurrent groups per published track layer.
//!
//! Who receives a group or a datagram is [`Meeting::route`](super::Meeting::route);
//! what happens to each subscriber's copy is [`super::group`] and [`super::subscriber`].
//! The I/O shell calls these and nothing else decides.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use super::subscriber::TrackKey;

/// How long media may precede the `Publish` that announces its track. QUIC does not
/// order the control stream against media streams, so a client that publishes and
/// starts sending at once can have its first objects arrive first.
pub const PUBLISH_GRACE: Duration = Duration::from_secs(1);

/// Most groups of one track layer a publisher may have open at once; a newer group
/// beyond it resets the oldest. Four covers a group still draining while the next ones
/// start (and streams that arrive out of order).
pub const MAX_OPEN_GROUPS_PER_LAYER: usize = 4;

/// Stream priority of a group towards one subscriber. The relay assigns it; nothing a
/// client claims (its track's `priority`, a group header's) enters into it, because
/// priorities are compared across *all* the streams of a subscriber's connection: a
/// publisher that could raise its own, or number its groups to look newest, would take
/// that subscriber's whole link from everyone else's tracks. So every track's current
/// group has the same priority (quinn serves equal priorities in turn, so publishers
/// share the link), and a group superseded by a newer one of the same track layer
/// drops below them (newer first within a track, without comparing group numbers
/// across tracks).
pub fn stream_priority(superseded: bool) -> i32 {
    if superseded {
        0
    } else {
        1
    }
}

/// Limits on what one publisher's groups may cost the relay, whoever subscribes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FanoutLimits {
    /// Most bytes (as [`GroupBuffer::held_bytes`](super::GroupBuffer::held_bytes)
    /// counts them) all of one publisher's group buffers may hold at once. Each chunk
    /// is pushed with [`FanoutLimits::group_budget`]; past it the slowest readers of
    /// that group are detached, so one publisher's slow audience never costs more.
    pub max_publisher_bytes: usize,
    /// A group that receives no bytes for this long is reset with
    /// [`ResetCause::Idle`](super::ResetCause::Idle): a stalled publisher pins nothing.
    pub group_idle_timeout: Duration,
}

impl Default for FanoutLimits {
    fn default() -> Self {
        Self {
            max_publisher_bytes: 4 * 1024 * 1024,
            // Frames come every few tens of milliseconds and a group lasts a keyframe
            // interval; ten seconds without a byte is a publisher that stopped mid-group
            // (a static screen share still sends a frame every second or so).
            group_idle_timeout: Duration::from_secs(10),
        }
    }
}

impl FanoutLimits {
    /// The budget to push a chunk (or open a group) with, given the bytes held by the
    /// same publisher's *other* group buffers (finished ones still draining included).
    pub fn group_budget(&self, held_by_other_groups: usize) -> usize {
        self.max_publisher_bytes
            .saturating_sub(held_by_other_groups)
    }

    /// Whether a group whose last chunk arrived at `last_push` is idle at `now`.
    pub fn is_idle(&self, last_push: Instant, now: Instant) -> bool {
        now.saturating_duration_since(last_push) >= self.group_idle_timeout
    }
}

/// What to do with media for a track the sender has not (yet) published.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Grace {
    /// Hold a group (or drop a datagram) until `until`, then look again.
    Wait {
        /// When the grace runs out.
        until: Instant,
    },
    /// The grace ran out: the sender is sending media for a track it never published.
    Expired,
}

/// The publish grace of one connection: one timer, started by the first media for an
/// unknown track and cleared by any media that routes. Documented in `PROTOCOL.md`.
#[derive(Debug, Default, Clone, Copy)]
pub struct PublishGrace {
    since: Option<Instant>,
}

impl PublishGrace {
    /// Media for an unknown track arrived at `now`.
    pub fn unknown(&mut self, now: Instant) -> Grace {
        let since = *self.since.get_or_insert(now);
        let until = since + PUBLISH_GRACE;
        if now >= until {
            Grace::Expired
        } else {
            Grace::Wait { until }
        }
    }

    /// Media for a published track arrived: the sender is in step again.
    pub fn routed(&mut self) {
        self.since = None;
    }
}

/// Handle to an open group, chosen by the caller (the shell uses its own group cells).
pub type GroupSlot = u64;

/// What opening a group decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Opened {
    /// Forward it; the listed older groups of the same layer must be reset.
    Forward {
        /// Groups that fell out of the concurrent-group limit.
        reset: Vec<GroupSlot>,
    },
    /// Older than every group already open at the limit: do not forward it.
    TooOld,
}

/// One publisher's open groups per track layer, to enforce
/// [`MAX_OPEN_GROUPS_PER_LAYER`]. Bounded: at most that many per layer, and layers are
/// bounded by the publisher's tracks.
#[derive(Debug, Default)]
pub struct OpenGroups {
    open: BTreeMap<TrackKey, Vec<(u64, GroupSlot)>>,
}

impl OpenGroups {
    /// Registers group `group` of `key` under `slot`.
    pub fn open(&mut self, key: TrackKey, group: u64, slot: GroupSlot) -> Opened {
        let groups = self.open.entry(key).or_default();
        let mut reset = Vec::new();
        if groups.len() >= MAX_OPEN_GROUPS_PER_LAYER {
            groups.sort_unstable();
            if groups.first().is_some_and(|&(oldest, _)| group <= oldest) {
                return Opened::TooOld;
            }
            let excess = groups.len() + 1 - MAX_OPEN_GROUPS_PER_LAYER;
            reset.extend(groups.drain(..excess).map(|(_, s)| s));
        }
        groups.push((group, slot));
        Opened::Forward { reset }
    }

    /// The group under `slot` ended (finished, reset, or its stream failed).
    pub fn close(&mut self, key: TrackKey, slot: GroupSlot) {
        if let Some(groups) = self.open.get_mut(&key) {
            groups.retain(|&(_, s)| s != slot);
            if groups.is_empty() {
                self.open.remove(&key);
            }
        }
    }

    /// Whether `group` is the newest open group of `key` (a subscriber who loses it is
    /// left with nothing current and needs a keyframe).
    pub fn is_newest(&self, key: TrackKey, group: u64) -> bool {
        self.open
            .get(&key)
            .is_none_or(|groups| groups.iter().all(|&(g, _)| g <= group))
    }

    /// Groups open in total.
    pub fn len(&self) -> usize {
        self.open.values().map(Vec::len).sum()
    }

    /// Whether no group is open.
    pub fn is_empty(&self) -> bool {
        self.open.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: TrackKey = TrackKey {
        publisher: 1,
        track: 1,
        layer: 0,
    };

    #[test]
    fn a_superseded_group_yields_to_every_current_one() {
        assert!(stream_priority(false) > stream_priority(true));
    }

    #[test]
    fn the_grace_runs_from_the_first_unknown_object_until_media_routes() {
        let t0 = Instant::now();
        let mut g = PublishGrace::default();
        let until = t0 + PUBLISH_GRACE;
        assert_eq!(g.unknown(t0), Grace::Wait { until });
        assert_eq!(
            g.unknown(t0 + Duration::from_millis(900)),
            Grace::Wait { until }
        );
        assert_eq!(g.unknown(until), Grace::Expired);
        g.routed();
        assert_eq!(
            g.unknown(until),
            Grace::Wait {
                until: until + PUBLISH_GRACE
            }
        );
    }

    #[test]
    fn a_new_group_beyond_the_limit_resets_the_oldest() {
        let mut o = OpenGroups::default();
        let max = MAX_OPEN_GROUPS_PER_LAYER as u64;
        for g in 0..max {
            assert_eq!(o.open(KEY, g, g * 10), Opened::Forward { reset: vec![] });
        }
        assert_eq!(
            o.open(KEY, max, max * 10),
            Opened::Forward { reset: vec![0] }
        );
        assert_eq!(o.len(), MAX_OPEN_GROUPS_PER_LAYER);
        assert!(o.is_newest(KEY, max) && !o.is_newest(KEY, max - 1));
        let other = TrackKey { layer: 1, ..KEY };
        assert_eq!(o.open(other, 1, 11), Opened::Forward { reset: vec![] });
        for g in 1..=max {
            o.close(KEY, g * 10);
        }
        o.close(other, 11);
        assert!(o.is_empty());
    }

    #[test]
    fn a_group_older_than_all_open_ones_at_the_limit_is_refused() {
        let mut o = OpenGroups::default();
        let max = MAX_OPEN_GROUPS_PER_LAYER as u64;
        for g in 0..max {
            o.open(KEY, 10 + 2 * g, g);
        }
        assert_eq!(o.open(KEY, 5, 50), Opened::TooOld);
        // Out of order but newer than the oldest: forwarded, the oldest goes.
        assert_eq!(o.open(KEY, 11, 51), Opened::Forward { reset: vec![0] });
    }
}
