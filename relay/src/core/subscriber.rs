//! One subscriber's drop policy across the groups it is reading, sans-IO.
//!
//! The bytes themselves live in shared [`GroupBuffer`](super::group::GroupBuffer)s; a
//! subscriber only has a cursor in each. This module decides, from each of its
//! groups' [`Lag`], which ones the subscriber gives up:
//!
//! 1. A group *superseded* by a newer group of the same track layer, whose oldest
//!    unread bytes have waited longer than `max_group_delay`, is dropped even under
//!    budget: it is late media nobody will watch.
//! 2. While the subscriber's unread bytes exceed `max_bytes`, whole groups are dropped
//!    oldest first, superseded ones before current ones.
//! 3. With more than `max_groups` groups open, the oldest are dropped.
//! 4. Dropping the newest group of a track leaves the subscriber with nothing current,
//!    so such a drop says `need_keyframe` and the caller asks the publisher for one.
//!
//! The subscriber jumps to the next group, which starts with a keyframe. Audio never
//! enters this policy: it travels as datagrams, so video backlog cannot delay it.
//! This module never reads payload bytes.

use std::time::{Duration, Instant};

use orelay_proto::{ParticipantId, TrackId};

use super::group::{DropCause, Lag};

/// A track layer as seen by a subscriber.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TrackKey {
    /// The publisher.
    pub publisher: ParticipantId,
    /// The track.
    pub track: TrackId,
    /// The layer.
    pub layer: u8,
}

/// How often the I/O shell runs [`plan_drops`] for every subscriber with open groups,
/// besides once each time a group opens for it. Between two passes a subscriber's
/// unread bytes can exceed `max_bytes` by what arrives for it in one interval (each
/// group's share of that is bounded by its publisher's budget,
/// [`FanoutLimits::max_publisher_bytes`](super::routing::FanoutLimits)).
pub const POLICY_INTERVAL: Duration = Duration::from_millis(50);

/// Limits of one subscriber's backlog.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueLimits {
    /// Most unread payload bytes across all of its groups.
    pub max_bytes: usize,
    /// Most groups open for it at once.
    pub max_groups: usize,
    /// How long a superseded group may wait before it is dropped.
    pub max_group_delay: Duration,
}

impl Default for QueueLimits {
    fn default() -> Self {
        Self {
            max_bytes: 1024 * 1024,
            // Two per possible subscription: one being written, one superseding it.
            max_groups: 2 * orelay_proto::limits::MAX_SUBSCRIPTIONS_PER_PARTICIPANT,
            max_group_delay: Duration::from_millis(500),
        }
    }
}

/// One of the subscriber's open groups, as the policy sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backlog {
    /// Its track layer.
    pub key: TrackKey,
    /// Its group sequence number.
    pub group: u64,
    /// How far behind the subscriber is in it.
    pub lag: Lag,
}

/// A group the policy gives up for this subscriber.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GroupDrop {
    /// Index into the slice passed to [`plan_drops`].
    pub index: usize,
    /// Why.
    pub cause: DropCause,
    /// Its unread bytes, discarded.
    pub bytes: usize,
    /// It was the newest group of its track layer: ask the publisher for a keyframe.
    pub need_keyframe: bool,
}

/// Whether `open[i]` has a newer group of the same track layer still open (and not
/// already chosen to be dropped).
fn superseded(open: &[Backlog], gone: &[bool], i: usize) -> bool {
    open.iter()
        .enumerate()
        .any(|(j, b)| !gone[j] && b.key == open[i].key && b.group > open[i].group)
}

/// Decides which of a subscriber's open groups to drop. `open` is in the order the
/// groups were opened (oldest first). See the module docs for the rules.
pub fn plan_drops(open: &[Backlog], limits: &QueueLimits, now: Instant) -> Vec<GroupDrop> {
    let mut gone = vec![false; open.len()];
    let mut drops = Vec::new();
    let mut take = |i: usize, cause: DropCause, gone: &mut Vec<bool>| {
        let need_keyframe = !superseded(open, gone, i);
        gone[i] = true;
        drops.push(GroupDrop {
            index: i,
            cause,
            bytes: open[i].lag.bytes,
            need_keyframe,
        });
    };
    for i in 0..open.len() {
        let late = open[i]
            .lag
            .since
            .is_some_and(|at| now.saturating_duration_since(at) > limits.max_group_delay);
        if late && superseded(open, &gone, i) {
            take(i, DropCause::Superseded, &mut gone);
        }
    }
    let mut count = gone.iter().filter(|g| !**g).count();
    for i in 0..open.len() {
        if count <= limits.max_groups {
            break;
        }
        if !gone[i] {
            take(i, DropCause::GroupCount, &mut gone);
            count -= 1;
        }
    }
    let mut unread: usize = (0..open.len())
        .filter(|&i| !gone[i])
        .map(|i| open[i].lag.bytes)
        .sum();
    while unread > limits.max_bytes {
        let candidates = || (0..open.len()).filter(|&i| !gone[i] && open[i].lag.bytes > 0);
        let victim = candidates()
            .find(|&i| superseded(open, &gone, i))
            .or_else(|| candidates().next());
        let Some(i) = victim else { break };
        unread -= open[i].lag.bytes;
        take(i, DropCause::SubscriberBudget, &mut gone);
    }
    drops
}

#[cfg(test)]
mod tests {
    use super::*;

    const VIDEO: TrackKey = TrackKey {
        publisher: 1,
        track: 1,
        layer: 0,
    };
    const SCREEN: TrackKey = TrackKey {
        publisher: 2,
        track: 1,
        layer: 0,
    };

    fn backlog(key: TrackKey, group: u64, bytes: usize, since: Option<Instant>) -> Backlog {
        Backlog {
            key,
            group,
            lag: Lag { bytes, since },
        }
    }

    #[test]
    fn nothing_is_dropped_within_budget_and_on_time() {
        let now = Instant::now();
        let open = [
            backlog(VIDEO, 1, 1000, Some(now)),
            backlog(VIDEO, 2, 1000, Some(now)),
        ];
        assert!(plan_drops(&open, &QueueLimits::default(), now).is_empty());
    }

    #[test]
    fn a_late_superseded_group_goes_without_a_keyframe_request() {
        let t0 = Instant::now();
        let now = t0 + Duration::from_millis(600);
        let open = [
            backlog(VIDEO, 1, 10, Some(t0)),
            backlog(VIDEO, 2, 10, Some(t0)),
            backlog(SCREEN, 1, 10, Some(t0)),
        ];
        let drops = plan_drops(&open, &QueueLimits::default(), now);
        assert_eq!(
            drops,
            [GroupDrop {
                index: 0,
                cause: DropCause::Superseded,
                bytes: 10,
                need_keyframe: false
            }],
            "the newest group of each track is kept however late"
        );
    }

    #[test]
    fn over_budget_superseded_groups_go_first_then_the_oldest_with_a_keyframe_request() {
        let now = Instant::now();
        // 2100 unread: dropping the superseded VIDEO 1 leaves 1400, still over.
        let limits = QueueLimits {
            max_bytes: 1000,
            ..QueueLimits::default()
        };
        let open = [
            backlog(SCREEN, 5, 800, Some(now)),
            backlog(VIDEO, 1, 700, Some(now)),
            backlog(VIDEO, 2, 600, Some(now)),
        ];
        let drops = plan_drops(&open, &limits, now);
        assert_eq!(drops.len(), 2);
        assert_eq!((drops[0].index, drops[0].need_keyframe), (1, false));
        assert_eq!((drops[1].index, drops[1].need_keyframe), (0, true));
        assert!(drops.iter().all(|d| d.cause == DropCause::SubscriberBudget));
    }

    #[test]
    fn too_many_groups_drops_the_oldest() {
        let now = Instant::now();
        let limits = QueueLimits {
            max_groups: 2,
            ..QueueLimits::default()
        };
        let open = [
            backlog(VIDEO, 1, 0, None),
            backlog(SCREEN, 1, 0, None),
            backlog(VIDEO, 2, 0, None),
        ];
        let drops = plan_drops(&open, &limits, now);
        assert_eq!(drops.len(), 1);
        assert_eq!(drops[0].index, 0);
        assert_eq!(drops[0].cause, DropCause::GroupCount);
        assert!(
            !drops[0].need_keyframe,
            "group 2 of the same track supersedes it"
        );
    }

    #[test]
    fn caught_up_groups_are_never_budget_victims() {
        let now = Instant::now();
        let limits = QueueLimits {
            max_bytes: 100,
            ..QueueLimits::default()
        };
        let open = [
            backlog(VIDEO, 1, 0, None),
            backlog(SCREEN, 1, 500, Some(now)),
        ];
        let drops = plan_drops(&open, &limits, now);
        assert_eq!(drops.len(), 1);
        assert_eq!(drops[0].index, 1);
    }
}
