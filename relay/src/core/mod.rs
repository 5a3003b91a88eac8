//! The relay's sans-IO core: meetings and their routes, the shared group buffers that
//! fan media out, each subscriber's drop policy, and the limits on what one client may
//! ask of the relay.
//!
//! Everything here is plain data driven by events and an explicit `now`; the async
//! shell only moves bytes and events between quinn and these types, and carries out
//! what they decide. Nothing here reads a media payload.

pub mod group;
pub mod group_header;
pub mod guard;
pub mod meeting;
pub mod meeting_id;
pub mod members;
pub mod moderation;
#[cfg(test)]
mod moderation_tests;
pub mod outbox;
pub mod ratelimit;
pub mod routing;
pub mod subscriber;
pub mod token;
pub mod waiting;

#[cfg(test)]
mod sim;

pub use group::{DropCause, GroupBuffer, Lag, Read, ReaderId, ResetCause};
pub use meeting::{Action, Meeting, MeetingLimits, Route, RouteVersion, Transport};
pub use meeting_id::{JoinError, MeetingId};
pub use moderation::{JoinRequest, Member, Placement};
pub use ratelimit::{RateLimit, TokenBucket};
pub use routing::{
    stream_priority, FanoutLimits, Grace, OpenGroups, Opened, PublishGrace, PUBLISH_GRACE,
};
pub use subscriber::{plan_drops, Backlog, GroupDrop, QueueLimits, TrackKey, POLICY_INTERVAL};
pub use token::{Grant, KindSet, TokenVerifier};
pub use waiting::Waiting;
