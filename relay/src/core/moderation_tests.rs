//! Sans-IO tests of admission and host controls: who receives what, in which order,
//! and which refusal each forbidden request gets.

use bytes::Bytes;
use orelay_proto::{
    ErrorCode, HostAction, ParticipantId, Recipient, RefuseReason, RejectReason, Role,
    ServerMessage, SharePolicy, TrackInfo, TrackKind,
};

use super::meeting::{Action, Meeting, MeetingLimits};
use super::moderation::{JoinRequest, Placement};
use super::token::{Grant, KindSet};

fn grant(identity: &str, role: Role, waiting_room: bool) -> Grant {
    Grant {
        identity: identity.into(),
        token_id: format!("jti-{identity}"),
        role,
        publish: if role == Role::Viewer {
            KindSet::default()
        } else {
            KindSet::ALL
        },
        passcode_required: false,
        waiting_room,
    }
}

fn join(m: &mut Meeting, g: Grant) -> Result<(Placement, Vec<Action>), RejectReason> {
    m.join(JoinRequest {
        passcode: String::new(),
        info: Bytes::from(g.identity.clone()),
        keys: Bytes::new(),
        grant: g,
    })
}

fn sent_to(actions: &[Action], who: ParticipantId) -> Vec<&ServerMessage> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Send { to, msg } if *to == who => Some(msg),
            _ => None,
        })
        .collect()
}

fn setup() -> (Meeting, ParticipantId, ParticipantId) {
    let mut m = Meeting::new(
        "pw",
        MeetingLimits {
            max_participants: 4,
        },
    );
    let (host, _) = join(&mut m, grant("host", Role::Host, false)).unwrap();
    let (member, _) = join(&mut m, grant("member", Role::Participant, false)).unwrap();
    (m, host.id(), member.id())
}

#[test]
fn a_waiting_joiner_gets_nothing_but_its_answer_until_admitted() {
    let (mut m, host, member) = setup();
    let (placement, actions) = join(&mut m, grant("guest", Role::Participant, true)).unwrap();
    let Placement::Waiting(guest) = placement else {
        panic!("the guest must wait");
    };
    assert_eq!(
        sent_to(&actions, guest).len(),
        1,
        "only its JoinResult(Waiting)"
    );
    assert!(matches!(
        sent_to(&actions, host)[..],
        [ServerMessage::WaitingJoined(_)]
    ));
    assert!(
        sent_to(&actions, member).is_empty(),
        "only moderators see the waiting room"
    );
    // Key messages to all skip it; to it are refused.
    let all = m
        .key_message(host, Recipient::All, Bytes::from_static(b"k"))
        .unwrap();
    assert_eq!(all.len(), 1);
    assert!(sent_to(&all, guest).is_empty());
    assert_eq!(
        m.key_message(host, Recipient::One(guest), Bytes::new()),
        Err(RefuseReason::NO_SUCH_PARTICIPANT)
    );
    assert_eq!(
        m.key_message(guest, Recipient::All, Bytes::new()),
        Err(RefuseReason::NOT_ADMITTED)
    );
    // It counts against the meeting's size.
    join(&mut m, grant("fourth", Role::Participant, false)).unwrap();
    assert_eq!(
        join(&mut m, grant("fifth", Role::Participant, false)).map(|_| ()),
        Err(RejectReason::MEETING_FULL)
    );
    assert_eq!(
        m.host_action(member, HostAction::Admit(guest)),
        Err(RefuseReason::NOT_HOST)
    );
    let admitted = m.host_action(host, HostAction::Admit(guest)).unwrap();
    let to_guest = sent_to(&admitted, guest);
    assert!(matches!(to_guest[0], ServerMessage::JoinResult(_)));
    assert!(to_guest
        .iter()
        .any(|msg| matches!(msg, ServerMessage::ParticipantJoined(p) if p.participant == host)));
    assert!(!m.is_waiting(guest));
}

#[test]
fn removal_bans_the_token_and_sends_the_identity_to_the_waiting_room() {
    let (mut m, host, member) = setup();
    let actions = m.host_action(host, HostAction::Remove(member)).unwrap();
    assert!(actions.contains(&Action::Close {
        to: member,
        code: ErrorCode::REMOVED
    }));
    assert!(sent_to(&actions, host)
        .iter()
        .any(|msg| matches!(msg, ServerMessage::ParticipantLeft { participant } if *participant == member)));
    assert_eq!(
        join(&mut m, grant("member", Role::Participant, false)).map(|_| ()),
        Err(RejectReason::REMOVED)
    );
    let mut fresh = grant("member", Role::Participant, false);
    fresh.token_id = "another-token".into();
    let (placement, _) = join(&mut m, fresh).unwrap();
    assert!(matches!(placement, Placement::Waiting(_)));
    // A co-host cannot remove the host.
    let (co, _) = join(&mut m, grant("co", Role::CoHost, false)).unwrap();
    assert_eq!(
        m.host_action(co.id(), HostAction::Remove(host)),
        Err(RefuseReason::NOT_HOST)
    );
}

#[test]
fn lock_share_policy_and_stopped_tracks() {
    let (mut m, host, member) = setup();
    m.host_action(host, HostAction::Lock(true)).unwrap();
    assert_eq!(
        join(&mut m, grant("late", Role::Participant, false)).map(|_| ()),
        Err(RejectReason::LOCKED)
    );
    join(&mut m, grant("cohost", Role::CoHost, false)).unwrap();
    let screen = TrackInfo {
        track: 9,
        kind: TrackKind::SCREEN,
        layers: 1,
        priority: 1,
    };
    m.publish(member, screen).unwrap();
    let actions = m
        .host_action(host, HostAction::SetSharePolicy(SharePolicy::HostOnly))
        .unwrap();
    assert!(actions.iter().any(|a| matches!(
        a,
        Action::Send {
            msg: ServerMessage::TrackStopped { stopped: true, .. },
            ..
        }
    )));
    let route = m.route(member, member, 9, 0, super::meeting::Transport::Stream);
    assert!(
        matches!(route, super::meeting::Route::Deliver { ref targets, .. } if targets.is_empty())
    );
    assert_eq!(
        m.may_publish(member, TrackKind::SCREEN),
        Err(RefuseReason::SCREEN_SHARE_HOST_ONLY)
    );
    assert_eq!(m.may_publish(host, TrackKind::SCREEN), Ok(()));
    m.host_action(
        host,
        HostAction::ResumeTrack {
            participant: member,
            track: 9,
        },
    )
    .unwrap();
    assert_eq!(
        m.host_action(
            host,
            HostAction::StopTrack {
                participant: member,
                track: 99
            }
        ),
        Err(RefuseReason::NO_SUCH_PARTICIPANT)
    );
}

#[test]
fn viewers_never_publish_and_grants_limit_kinds() {
    let (mut m, _, _) = setup();
    let (viewer, _) = join(&mut m, grant("v", Role::Viewer, false)).unwrap();
    assert_eq!(
        m.may_publish(viewer.id(), TrackKind::AUDIO),
        Err(RefuseReason::ROLE_CANNOT_PUBLISH)
    );
    let mut voice = grant("voice", Role::Participant, false);
    voice.publish = KindSet::ALL;
    let (voice, _) = join(&mut m, voice).unwrap();
    assert_eq!(m.may_publish(voice.id(), TrackKind::VIDEO), Ok(()));
}

#[test]
fn a_stopped_track_stays_stopped_when_published_again() {
    let (mut m, host, member) = setup();
    let audio = TrackInfo {
        track: 1,
        kind: TrackKind::AUDIO,
        layers: 1,
        priority: 1,
    };
    m.publish(member, audio).unwrap();
    m.host_action(
        host,
        HostAction::StopTrack {
            participant: member,
            track: 1,
        },
    )
    .unwrap();
    m.unpublish(member, 1).unwrap();
    assert!(matches!(
        m.publish(member, audio),
        Err(crate::error::SessionError::Refused(
            RefuseReason::STOPPED_BY_HOST
        ))
    ));
    // Resuming it, though unpublished, lets it be published again.
    m.host_action(
        host,
        HostAction::ResumeTrack {
            participant: member,
            track: 1,
        },
    )
    .unwrap();
    m.publish(member, audio).unwrap();
    // A waiting joiner removed by the host is barred too.
    let (w, _) = join(&mut m, grant("lurker", Role::Participant, true)).unwrap();
    let actions = m.host_action(host, HostAction::Remove(w.id())).unwrap();
    assert!(actions.contains(&Action::Close {
        to: w.id(),
        code: ErrorCode::REMOVED
    }));
    assert_eq!(
        join(&mut m, grant("lurker", Role::Participant, true)).map(|_| ()),
        Err(RejectReason::REMOVED)
    );
}
