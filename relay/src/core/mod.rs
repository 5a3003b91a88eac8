//! The relay's sans-IO core: meeting state and the subscriber drop policy.
//!
//! Everything here is plain data driven by events and an explicit `now`; the async
//! shell in [`crate::server`] and [`crate::session`] only moves bytes and events
//! between quinn and these types. Nothing here reads a media payload.

pub mod group_header;
pub mod meeting;
pub mod queue;
pub mod registry;

#[cfg(test)]
mod sim;

pub use meeting::{Action, Meeting, MeetingLimits};
pub use queue::{Dropped, Pop, QueueLimits, SlotId, SubscriberQueue, TrackKey};
pub use registry::{JoinError, MeetingId};
