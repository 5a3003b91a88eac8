//! Audio in the simulator: datagrams routed as the shell routes them, through a
//! route cached per track and looked up again only when that track's
//! [`RouteVersion`] moves.

use super::super::{Grace, Route, Transport};
use super::*;
use crate::error::PeerMisbehaved;

/// An audio track's script: one datagram every 20 ms, routed through a cached route.
#[derive(Debug)]
pub(super) struct Audio {
    pub(super) who: Who,
    pub(super) track: TrackId,
    pub(super) running: bool,
    pub(super) next_at: Instant,
    /// The route cached as the shell caches it, checked against its version each datagram.
    pub(super) route: Option<(RouteVersion, u64, Vec<ParticipantId>)>,
    pub(super) lookups: u64,
    pub(super) sent: Vec<Bytes>,
    pub(super) unrouted: u64,
}

impl Sim {
    /// Starts sending an audio datagram every 20 ms on `track`, published or not.
    pub(super) fn start_audio(&mut self, who: Who, track: TrackId) {
        self.audio.push(Audio {
            who,
            track,
            running: true,
            next_at: self.now,
            route: None,
            lookups: 0,
            sent: Vec::new(),
            unrouted: 0,
        });
    }

    /// An audio datagram: routed through the cached route while its version holds.
    pub(super) fn emit_datagram(&mut self, i: usize) {
        let a = &mut self.audio[i];
        a.next_at += Duration::from_millis(20);
        let datagram = Bytes::from(vec![a.sent.len() as u8; 160]);
        a.sent.push(datagram.clone());
        let (who, track) = (a.who, a.track);
        let fresh = a.route.as_ref().is_some_and(|(v, at, _)| v.get() == *at);
        if !fresh {
            a.route = None;
            let meeting = &self.meetings[who.meeting];
            match meeting.route(who.id, who.id, track, 0, Transport::Datagram) {
                Route::Deliver {
                    targets,
                    version,
                    generation,
                } => {
                    let a = &mut self.audio[i];
                    a.lookups += 1;
                    a.route = Some((version, generation, targets));
                    self.client_mut(who).grace.routed();
                }
                Route::Unknown => {
                    self.audio[i].unrouted += 1;
                    let now = self.now;
                    if self.client_mut(who).grace.unknown(now) == Grace::Expired {
                        self.close(who, PeerMisbehaved::TrackNotPublished.into());
                    }
                    return;
                }
                Route::Invalid => {
                    self.close(who, PeerMisbehaved::TrackNotPublished.into());
                    return;
                }
            }
        }
        let key = TrackKey {
            publisher: who.id,
            track,
            layer: 0,
        };
        let now = self.now;
        let targets = self.audio[i]
            .route
            .as_ref()
            .map(|r| r.2.clone())
            .unwrap_or_default();
        for id in targets {
            let c = self.client_mut(Who {
                meeting: who.meeting,
                id,
            });
            assert!(c.present, "a datagram to {id}, who left");
            c.datagrams.push((now, key, datagram.clone()));
        }
    }
}
