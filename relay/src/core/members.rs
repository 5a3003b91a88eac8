//! The members of a meeting as admission sees them: who a participant is (its grant),
//! where a join ended up, the passcode hash, and the meeting's moderation state. Data
//! only; the rules that change it are in [`super::moderation`].

use std::collections::{BTreeMap, HashSet, VecDeque};

use bytes::Bytes;
use orelay_proto::{ParticipantId, Role, SharePolicy};

use super::token::{Grant, KindSet};

/// Most removed token IDs and identities a meeting remembers; beyond, the oldest are
/// forgotten (a host removing thousands of people should lock the meeting instead).
pub const MAX_REMOVED: usize = 4096;

/// A meeting passcode kept as `HMAC-SHA256(salt, passcode)` with a random salt.
#[derive(Debug)]
pub struct Passcode {
    key: ring::hmac::Key,
    tag: ring::hmac::Tag,
}

impl Passcode {
    /// Hashes `passcode` under a fresh random salt.
    pub fn new(passcode: &str) -> Self {
        let rng = ring::rand::SystemRandom::new();
        let key = ring::hmac::Key::generate(ring::hmac::HMAC_SHA256, &rng)
            .unwrap_or_else(|_| ring::hmac::Key::new(ring::hmac::HMAC_SHA256, b"orelay-fallback"));
        let tag = ring::hmac::sign(&key, passcode.as_bytes());
        Self { key, tag }
    }

    /// Whether `candidate` matches, in time independent of where they differ.
    pub fn matches(&self, candidate: &str) -> bool {
        ring::hmac::verify(&self.key, candidate.as_bytes(), self.tag.as_ref()).is_ok()
    }
}

/// Who a participant is, as its token (or open-mode join) says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// Its role.
    pub role: Role,
    /// What it may publish.
    pub publish: KindSet,
    /// Identity at the meeting service (empty in open mode).
    pub identity: String,
    /// Token ID (empty in open mode).
    pub token_id: String,
}

impl From<&Grant> for Member {
    fn from(g: &Grant) -> Self {
        Member {
            role: g.role,
            publish: g.publish,
            identity: g.identity.clone(),
            token_id: g.token_id.clone(),
        }
    }
}

/// A join as the meeting sees it once the credential was checked.
#[derive(Debug, Clone)]
pub struct JoinRequest {
    /// The passcode the joiner typed.
    pub passcode: String,
    /// Its opaque info blob.
    pub info: Bytes,
    /// Its opaque public-key bundle.
    pub keys: Bytes,
    /// What its credential grants.
    pub grant: Grant,
}

/// Where a join ended up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placement {
    /// In the meeting.
    Admitted(ParticipantId),
    /// In the waiting room.
    Waiting(ParticipantId),
}

impl Placement {
    /// The ID either way.
    pub fn id(self) -> ParticipantId {
        match self {
            Placement::Admitted(id) | Placement::Waiting(id) => id,
        }
    }
}

#[derive(Debug, Clone)]
pub(super) struct Waiter {
    pub(super) info: Bytes,
    pub(super) keys: Bytes,
    pub(super) member: Member,
}

/// A bounded set that forgets its oldest entries.
#[derive(Debug, Default)]
pub(super) struct RemovedSet {
    set: HashSet<String>,
    order: VecDeque<String>,
}

impl RemovedSet {
    pub(super) fn insert(&mut self, value: &str) {
        if value.is_empty() || !self.set.insert(value.to_owned()) {
            return;
        }
        self.order.push_back(value.to_owned());
        if self.order.len() > MAX_REMOVED {
            if let Some(old) = self.order.pop_front() {
                self.set.remove(&old);
            }
        }
    }

    pub(super) fn remove(&mut self, value: &str) {
        if self.set.remove(value) {
            self.order.retain(|v| v != value);
        }
    }

    pub(super) fn contains(&self, value: &str) -> bool {
        !value.is_empty() && self.set.contains(value)
    }
}

/// A meeting's moderation state.
#[derive(Debug, Default)]
pub struct Moderation {
    pub(super) locked: bool,
    pub(super) share: SharePolicy,
    pub(super) waiting: BTreeMap<ParticipantId, Waiter>,
    pub(super) removed_tokens: RemovedSet,
    pub(super) removed_identities: RemovedSet,
    /// Tracks a host stopped: they stay stopped across unpublish and publish again.
    pub(super) stopped: std::collections::BTreeSet<(ParticipantId, u64)>,
}
