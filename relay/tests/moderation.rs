//! Host controls over real QUIC: the waiting room, lock, remove with no rejoin,
//! relay-enforced track stops and publishing rights, and every refusal's code.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::*;
use orelay_client::{ClientError, JoinRequest, Session};
use orelay_proto::{
    ClientMessage, Credential, ErrorCode, HostAction, Recipient, RefuseReason, RejectReason, Role,
    ServerMessage, SharePolicy, TrackInfo, TrackKind,
};
use orelay_relay::core::token::{unix_now, Claims};

const SCREEN: TrackInfo = TrackInfo {
    track: 3,
    kind: TrackKind::SCREEN,
    layers: 1,
    priority: 50,
};

/// Claims for `identity` in `meeting` with `role`, to adjust before minting.
fn claims(meeting: &str, identity: &str, role: Role) -> Claims {
    Claims::new(meeting, identity, role, unix_now(), 600)
}

/// Joins `meeting` as `identity` with `role` (a token without waiting room); panics if refused.
async fn member(
    client: &orelay_client::Client,
    addr: std::net::SocketAddr,
    meeting: &str,
    identity: &str,
    role: Role,
) -> Session {
    client
        .join_with(addr, &request(meeting, &claims(meeting, identity, role)))
        .await
        .unwrap()
}

fn request(meeting: &str, claims: &Claims) -> JoinRequest {
    JoinRequest {
        meeting_id: meeting.to_owned(),
        passcode: String::new(),
        info: claims.sub.as_bytes().to_vec(),
        credential: Credential::Token(signing_key().mint(claims).unwrap()),
        keys: Bytes::from(format!("keys of {}", claims.sub)),
    }
}

/// The next event that `pick` accepts, skipping others; fails after 10 s.
async fn next_matching<T>(s: &mut Session, mut pick: impl FnMut(&ServerMessage) -> Option<T>) -> T {
    loop {
        let event = tokio::time::timeout(Duration::from_secs(10), s.next_event())
            .await
            .expect("timed out waiting for an event")
            .expect("control stream ended")
            .expect("control stream failed");
        if let Some(t) = pick(&event) {
            return t;
        }
    }
}

async fn refused(s: &mut Session) -> (u64, u64, RefuseReason) {
    next_matching(s, |e| match e {
        ServerMessage::Refused {
            message_type,
            subject,
            reason,
        } => Some((*message_type, *subject, *reason)),
        _ => None,
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_waiting_room_holds_joiners_until_a_host_decides() {
    let (relay, client) = start(config());
    let meeting = meeting_id(1);
    let mut host = member(&client, relay.addr, &meeting, "host", Role::Host).await;
    let mut member = member(&client, relay.addr, &meeting, "member", Role::Participant).await;
    let mut wait = claims(&meeting, "guest", Role::Participant);
    wait.waiting_room = true;
    let guest = tokio::spawn({
        let (client, req) = (client.clone(), request(&meeting, &wait));
        async move { client.join_with(relay.addr, &req).await }
    });
    let waiting = next_matching(&mut host, |e| match e {
        ServerMessage::WaitingJoined(p) => Some(p.clone()),
        _ => None,
    })
    .await;
    assert_eq!(&waiting.info[..], b"guest");
    assert_eq!(&waiting.keys[..], b"keys of guest");

    // While it waits, the meeting goes on: a key message to all and a track reach the
    // member (proving both paths ran) and never the waiting guest, who is not told
    // who is present either.
    host.send(&ClientMessage::KeyMessage {
        to: Recipient::All,
        blob: Bytes::from_static(b"sealed meeting key"),
    })
    .await
    .unwrap();
    host.publish(AUDIO).await.unwrap();
    let from = next_matching(&mut member, |e| match e {
        ServerMessage::KeyMessage { from, blob, to_all } => {
            assert!(*to_all);
            assert_eq!(&blob[..], b"sealed meeting key");
            Some(*from)
        }
        _ => None,
    })
    .await;
    assert_eq!(from, host.participant());
    await_tracks(&mut member, 1).await;
    // A key message addressed to the waiting guest is refused, not delivered.
    host.send(&ClientMessage::KeyMessage {
        to: Recipient::One(waiting.participant),
        blob: Bytes::from_static(b"for the guest"),
    })
    .await
    .unwrap();
    let (_, subject, reason) = refused(&mut host).await;
    assert_eq!(
        (subject, reason),
        (waiting.participant, RefuseReason::NO_SUCH_PARTICIPANT)
    );
    assert!(!guest.is_finished(), "the guest must still be waiting");

    host.send(&ClientMessage::HostAction(HostAction::Admit(
        waiting.participant,
    )))
    .await
    .unwrap();
    let mut guest = guest.await.unwrap().unwrap();
    assert!(guest.waited());
    assert_eq!(guest.participant(), waiting.participant);
    // Admitted, it learns the roster now, and the host's track, but not the key
    // message sent before it was in: it was never delivered to it.
    let mut seen = Vec::new();
    let tracks = await_tracks_noting(&mut guest, &mut seen).await;
    assert_eq!(tracks, host.participant());
    assert!(
        seen.iter()
            .all(|e| !matches!(e, ServerMessage::KeyMessage { .. })),
        "{seen:?}"
    );
    assert!(seen.iter().any(
        |e| matches!(e, ServerMessage::ParticipantJoined(p) if p.participant == host.participant())
    ));

    // Denied: the joiner's wait ends with DENIED.
    let denied = tokio::spawn({
        let mut c = claims(&meeting, "stranger", Role::Participant);
        c.waiting_room = true;
        let (client, req) = (client.clone(), request(&meeting, &c));
        async move { client.join_with(relay.addr, &req).await }
    });
    let stranger = next_matching(&mut host, |e| match e {
        ServerMessage::WaitingJoined(p) => Some(p.participant),
        _ => None,
    })
    .await;
    host.send(&ClientMessage::HostAction(HostAction::Deny(stranger)))
        .await
        .unwrap();
    let denied = denied.await.unwrap();
    assert!(
        matches!(denied, Err(ClientError::Rejected(RejectReason::DENIED))),
        "{denied:?}"
    );
    relay.shutdown().await;
}

/// Reads events until a TrackPublished arrives, keeping every event; returns its publisher.
async fn await_tracks_noting(s: &mut Session, seen: &mut Vec<ServerMessage>) -> u64 {
    next_matching(s, |e| {
        seen.push(e.clone());
        match e {
            ServerMessage::TrackPublished { participant, .. } => Some(*participant),
            _ => None,
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lock_remove_and_no_rejoin() {
    let (relay, client) = start(config());
    let meeting = meeting_id(2);
    let mut host = member(&client, relay.addr, &meeting, "host", Role::Host).await;
    let pest_claims = claims(&meeting, "pest", Role::Participant);
    let pest = client
        .join_with(relay.addr, &request(&meeting, &pest_claims))
        .await
        .unwrap();

    // Remove: closed with REMOVED, everyone told it left.
    host.send(&ClientMessage::HostAction(HostAction::Remove(
        pest.participant(),
    )))
    .await
    .unwrap();
    let conn = pest.media().connection().clone();
    assert_eq!(
        close_code(&conn).await,
        Some(u64::from(ErrorCode::REMOVED.0))
    );
    next_matching(&mut host, |e| match e {
        ServerMessage::ParticipantLeft { participant } if *participant == pest.participant() => {
            Some(())
        }
        _ => None,
    })
    .await;
    // The same token cannot rejoin.
    let again = client
        .join_with(relay.addr, &request(&meeting, &pest_claims))
        .await;
    assert!(
        matches!(again, Err(ClientError::Rejected(RejectReason::REMOVED))),
        "{again:?}"
    );
    // A new token for the same identity waits for the host, who may let it back in.
    let back = tokio::spawn({
        let (client, req) = (
            client.clone(),
            request(&meeting, &claims(&meeting, "pest", Role::Participant)),
        );
        async move { client.join_with(relay.addr, &req).await }
    });
    let waiting = next_matching(&mut host, |e| match e {
        ServerMessage::WaitingJoined(p) => Some(p.participant),
        _ => None,
    })
    .await;
    host.send(&ClientMessage::HostAction(HostAction::Admit(waiting)))
        .await
        .unwrap();
    assert!(back.await.unwrap().unwrap().waited());

    // Lock: participants are refused with LOCKED, hosts still get in.
    host.send(&ClientMessage::HostAction(HostAction::Lock(true)))
        .await
        .unwrap();
    next_matching(&mut host, |e| match e {
        ServerMessage::MeetingPolicy { locked: true, .. } => Some(()),
        _ => None,
    })
    .await;
    let late = client
        .join_with(
            relay.addr,
            &request(&meeting, &claims(&meeting, "late", Role::Participant)),
        )
        .await;
    assert!(
        matches!(late, Err(ClientError::Rejected(RejectReason::LOCKED))),
        "{late:?}"
    );
    let cohost = member(&client, relay.addr, &meeting, "co", Role::CoHost).await;
    assert_eq!(cohost.role(), Role::CoHost);
    let closes = relay.stats.snapshot().closes;
    assert_eq!(closes.get("REMOVED"), Some(&1), "{closes:?}");
    relay.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishing_rights_and_host_actions_are_enforced_with_specific_refusals() {
    let (relay, client) = start(config());
    let meeting = meeting_id(3);
    let mut host = member(&client, relay.addr, &meeting, "host", Role::Host).await;
    let mut viewer = member(&client, relay.addr, &meeting, "viewer", Role::Viewer).await;
    let mut audio_only = claims(&meeting, "voice", Role::Participant);
    audio_only.publish = vec!["audio".into()];
    let mut voice = client
        .join_with(relay.addr, &request(&meeting, &audio_only))
        .await
        .unwrap();
    let mut sharer = member(&client, relay.addr, &meeting, "sharer", Role::Participant).await;

    viewer.publish(AUDIO).await.unwrap();
    assert_eq!(
        refused(&mut viewer).await.2,
        RefuseReason::ROLE_CANNOT_PUBLISH
    );
    voice.publish(VIDEO).await.unwrap();
    assert_eq!(
        refused(&mut voice).await,
        (0x02, VIDEO.track, RefuseReason::KIND_NOT_GRANTED)
    );
    voice
        .send(&ClientMessage::HostAction(HostAction::Lock(true)))
        .await
        .unwrap();
    assert_eq!(refused(&mut voice).await.2, RefuseReason::NOT_HOST);

    // Screen share: allowed, then the host makes it host-only, which stops the share.
    sharer.publish(SCREEN).await.unwrap();
    await_tracks(&mut host, 1).await;
    host.send(&ClientMessage::HostAction(HostAction::SetSharePolicy(
        SharePolicy::HostOnly,
    )))
    .await
    .unwrap();
    next_matching(&mut sharer, |e| match e {
        ServerMessage::TrackStopped {
            track,
            stopped: true,
            ..
        } if *track == SCREEN.track => Some(()),
        _ => None,
    })
    .await;
    let second = TrackInfo { track: 4, ..SCREEN };
    sharer.publish(second).await.unwrap();
    assert_eq!(
        refused(&mut sharer).await.2,
        RefuseReason::SCREEN_SHARE_HOST_ONLY
    );
    // Nobody was closed for any of it.
    let stats = relay.stats.snapshot();
    assert_eq!(stats.requests_refused, 4);
    assert_eq!(stats.participants_active, 4);
    relay.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_track_is_not_forwarded_until_resumed() {
    let (relay, client) = start(config());
    let meeting = meeting_id(4);
    let mut host = member(&client, relay.addr, &meeting, "host", Role::Host).await;
    let mut talker = member(&client, relay.addr, &meeting, "talker", Role::Participant).await;
    talker.publish(AUDIO).await.unwrap();
    await_tracks(&mut host, 1).await;
    subscribe_confirmed(&mut host, talker.participant(), AUDIO.track).await;
    let (tm, hm) = (talker.media(), host.media());
    let send = |group: u64| {
        let h = tm.audio_header(AUDIO.track, group, 0, 200);
        tm.send_audio(&h, &group.to_be_bytes()).unwrap();
    };
    // Flowing: the host hears the talker.
    let heard = async {
        let mut g = 0;
        loop {
            send(g);
            g += 1;
            if let Ok(Ok((h, _))) =
                tokio::time::timeout(Duration::from_millis(50), hm.read_audio()).await
            {
                return h.group;
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), heard)
        .await
        .unwrap();

    host.send(&ClientMessage::HostAction(HostAction::StopTrack {
        participant: talker.participant(),
        track: AUDIO.track,
    }))
    .await
    .unwrap();
    next_matching(&mut talker, |e| match e {
        ServerMessage::TrackStopped { stopped: true, .. } => Some(()),
        _ => None,
    })
    .await;
    // Drain anything in flight, then prove the relay reads but does not forward.
    while let Ok(Ok(_)) = tokio::time::timeout(Duration::from_millis(200), hm.read_audio()).await {}
    let before = relay.stats.snapshot();
    for g in 1_000..1_100 {
        send(g);
    }
    let stats = relay.stats.clone();
    assert!(
        eventually(Duration::from_secs(10), || stats.snapshot().datagrams_in
            >= before.datagrams_in + 100)
        .await,
        "the relay must have received the stopped track's audio"
    );
    assert_eq!(relay.stats.snapshot().datagrams_out, before.datagrams_out);
    assert!(hm.connection().stats().frame_rx.datagram > 0);

    host.send(&ClientMessage::HostAction(HostAction::ResumeTrack {
        participant: talker.participant(),
        track: AUDIO.track,
    }))
    .await
    .unwrap();
    next_matching(&mut talker, |e| match e {
        ServerMessage::TrackStopped { stopped: false, .. } => Some(()),
        _ => None,
    })
    .await;
    let resumed = async {
        let mut g = 2_000;
        loop {
            send(g);
            g += 1;
            if let Ok(Ok((h, _))) =
                tokio::time::timeout(Duration::from_millis(50), hm.read_audio()).await
            {
                if h.group >= 2_000 {
                    return;
                }
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), resumed)
        .await
        .unwrap();
    relay.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_tokens_each_get_their_own_answer() {
    let mut cfg = config();
    cfg.admission.region = "eu-west".into();
    let (relay, client) = start(cfg);
    let meeting = meeting_id(5);
    let answer = |req: JoinRequest| {
        let client = client.clone();
        async move {
            match client.join_with(relay.addr, &req).await {
                Err(ClientError::Rejected(reason)) => reason,
                other => panic!("expected a rejection, got {other:?}"),
            }
        }
    };
    let mut expired = claims(&meeting, "a", Role::Host);
    expired.exp = unix_now() - 3_600;
    assert_eq!(
        answer(request(&meeting, &expired)).await,
        RejectReason::TOKEN_EXPIRED
    );
    let mut elsewhere = claims(&meeting, "a", Role::Host);
    elsewhere.regions = vec!["us-east".into()];
    assert_eq!(
        answer(request(&meeting, &elsewhere)).await,
        RejectReason::REGION
    );
    let other_meeting = claims(&meeting_id(6), "a", Role::Host);
    assert_eq!(
        answer(request(&meeting, &other_meeting)).await,
        RejectReason::TOKEN_INVALID
    );
    let mut none = request(&meeting, &claims(&meeting, "a", Role::Host));
    none.credential = Credential::None;
    assert_eq!(answer(none).await, RejectReason::NOT_ALLOWED);
    let mut here = claims(&meeting, "a", Role::Host);
    here.regions = vec!["us-east".into(), "eu-west".into()];
    client
        .join_with(relay.addr, &request(&meeting, &here))
        .await
        .unwrap();
    relay.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_mode_creates_meetings_only_with_the_host_secret() {
    let mut cfg = config();
    cfg.admission.mode = orelay_relay::config::AdmissionMode::Open;
    cfg.admission.host_secret = "sixteen-chars-secret".into();
    let (relay, _) = start(cfg);
    let pin = orelay_client::parse_fingerprint(&relay.fingerprint).unwrap();
    let plain = orelay_client::Client::new("127.0.0.1:0".parse().unwrap(), pin).unwrap();
    let meeting = meeting_id(7);
    // Guessing a fresh ID no longer creates the meeting.
    let guess = plain.join(relay.addr, &meeting, "1234", b"g").await;
    assert!(
        matches!(
            guess,
            Err(ClientError::Rejected(RejectReason::BAD_PASSCODE))
        ),
        "{guess:?}"
    );
    assert_eq!(relay.stats.snapshot().meetings_active, 0);
    let host = JoinRequest {
        meeting_id: meeting.clone(),
        passcode: "open sesame".into(),
        credential: Credential::HostSecret("sixteen-chars-secret".into()),
        ..JoinRequest::default()
    };
    let host = plain.join_with(relay.addr, &host).await.unwrap();
    assert_eq!(host.role(), Role::Host);
    let wrong = plain.join(relay.addr, &meeting, "open says me", b"w").await;
    assert!(
        matches!(
            wrong,
            Err(ClientError::Rejected(RejectReason::BAD_PASSCODE))
        ),
        "{wrong:?}"
    );
    let guest = plain
        .join(relay.addr, &meeting, "open sesame", b"ok")
        .await
        .unwrap();
    assert_eq!(guest.role(), Role::Participant);
    let bad_secret = JoinRequest {
        meeting_id: meeting_id(8),
        credential: Credential::HostSecret("sixteen-chars-secreT".into()),
        ..JoinRequest::default()
    };
    let bad = plain.join_with(relay.addr, &bad_secret).await;
    assert!(
        matches!(bad, Err(ClientError::Rejected(RejectReason::BAD_PASSCODE))),
        "{bad:?}"
    );
    relay.shutdown().await;
}
