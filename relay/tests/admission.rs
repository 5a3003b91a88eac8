//! Joining: passcodes, meeting IDs, the join deadline, connection caps, and the close
//! code clients see when the relay shuts down.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::*;
use orelay_client::{ClientError, JoinRequest};
use orelay_proto::{Credential, ErrorCode, RejectReason, Role, ServerMessage};
use orelay_relay::core::token::{unix_now, Claims};

/// A join carrying a token for `meeting` that requires `passcode`, typing `typed`.
fn request(meeting: &str, role: Role, passcode: &str, typed: &str) -> JoinRequest {
    let mut claims = Claims::new(meeting, "someone", role, unix_now(), 600);
    claims.require_passcode(passcode);
    JoinRequest {
        meeting_id: meeting.to_owned(),
        passcode: typed.to_owned(),
        info: b"x".to_vec(),
        credential: Credential::Token(signing_key().mint(&claims).unwrap()),
        keys: bytes::Bytes::new(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_passcode_is_rejected_with_a_reason_and_right_one_admitted() {
    let (relay, client) = start(config());
    let meeting = meeting_id(3);
    let host = client
        .join_with(
            relay.addr,
            &request(&meeting, Role::Host, "correct horse", "correct horse"),
        )
        .await
        .unwrap();
    assert_eq!(host.role(), Role::Host);

    let wrong = client
        .join_with(
            relay.addr,
            &request(
                &meeting,
                Role::Participant,
                "correct horse",
                "battery staple",
            ),
        )
        .await;
    assert!(
        matches!(
            wrong,
            Err(ClientError::Rejected(RejectReason::BAD_PASSCODE))
        ),
        "{wrong:?}"
    );

    let mut guest = client
        .join_with(
            relay.addr,
            &request(
                &meeting,
                Role::Participant,
                "correct horse",
                "correct horse",
            ),
        )
        .await
        .unwrap();
    assert_ne!(guest.participant(), host.participant());
    assert_eq!(guest.role(), Role::Participant);
    // The guest learns the meeting's policy, then about the host, first thing.
    let first = guest.next_event().await.unwrap().unwrap();
    assert!(
        matches!(first, ServerMessage::MeetingPolicy { locked: false, .. }),
        "{first:?}"
    );
    let second = guest.next_event().await.unwrap().unwrap();
    assert!(
        matches!(second, ServerMessage::ParticipantJoined(p) if p.participant == host.participant() && p.role == Role::Host)
    );

    let short = client
        .join(relay.addr, "12345", "correct horse", b"s")
        .await;
    assert!(
        matches!(
            short,
            Err(ClientError::Rejected(RejectReason::INVALID_MEETING_ID))
        ),
        "{short:?}"
    );

    let stats = relay.stats.snapshot();
    assert_eq!((stats.joins_admitted, stats.joins_rejected), (2, 2));
    relay.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_connection_is_closed_at_the_join_deadline() {
    let mut cfg = config();
    cfg.join_timeout_ms = 300;
    let (relay, client) = start(cfg);
    let conn = client.connect(relay.addr).await.unwrap();
    assert_eq!(
        close_code(&conn).await,
        Some(ErrorCode::JOIN_TIMEOUT.0.into())
    );
    relay.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_over_the_cap_are_refused_and_shutdown_closes_with_a_code() {
    let mut cfg = config();
    cfg.max_connections = 2;
    cfg.max_unjoined = 2;
    let (relay, client) = start(cfg);
    let a = client
        .join(relay.addr, &meeting_id(4), "pw", b"a")
        .await
        .unwrap();
    let _b = client
        .join(relay.addr, &meeting_id(4), "pw", b"b")
        .await
        .unwrap();
    let refused = client.connect(relay.addr).await;
    assert!(
        matches!(refused, Err(ClientError::Connection(quinn::ConnectionError::ConnectionClosed(ref c))) if c.error_code == quinn::TransportErrorCode::CONNECTION_REFUSED),
        "{refused:?}"
    );
    assert_eq!(relay.stats.snapshot().connections_refused, 1);

    let conn = a.media().connection().clone();
    let stats = relay.stats.clone();
    tokio::time::timeout(Duration::from_secs(10), relay.shutdown())
        .await
        .unwrap();
    assert_eq!(close_code(&conn).await, Some(ErrorCode::SHUTDOWN.0.into()));
    assert_eq!(stats.snapshot().connections_active, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_unjoined_cap_the_oldest_waiting_connection_makes_room() {
    let mut cfg = config();
    cfg.max_connections = 10;
    cfg.max_unjoined = 1;
    let (relay, client) = start(cfg);
    // One connection sits there without joining; a newcomer is never refused for it...
    let idle = client.connect(relay.addr).await.unwrap();
    // Its handshake is complete on the relay's side too (else it is abandoned silently).
    let stats = relay.stats.clone();
    assert!(
        eventually(Duration::from_secs(10), || stats
            .snapshot()
            .connections_accepted
            == 1)
        .await
    );
    let _joined = client
        .join(relay.addr, &meeting_id(5), "pw", b"n")
        .await
        .unwrap();
    // ...the idle one is closed instead, with the relay-limit code.
    assert_eq!(
        close_code(&idle).await,
        Some(ErrorCode::CONNECTION_LIMIT.0.into())
    );
    let stats = relay.stats.snapshot();
    assert_eq!(stats.connections_refused, 0);
    assert_eq!(stats.unjoined_evicted, 1);
    relay.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn joining_a_meeting_whose_roster_exceeds_the_backlog_is_fine() {
    let mut cfg = config();
    cfg.control_backlog = 16;
    let (relay, client) = start(cfg);
    let meeting = meeting_id(6);
    let mut present = Vec::new();
    for i in 0..12u8 {
        let mut s = client.join(relay.addr, &meeting, "pw", &[i]).await.unwrap();
        s.publish(AUDIO).await.unwrap();
        s.publish(VIDEO).await.unwrap();
        present.push(s);
    }
    // 12 participants + 24 tracks = 36 roster messages, more than the backlog of 16,
    // delivered to a newcomer that has not started reading yet.
    let mut late = client
        .join(relay.addr, &meeting, "pw", b"late")
        .await
        .unwrap();
    let tracks = await_tracks(&mut late, 24).await;
    assert_eq!(tracks.len(), 24);
    assert!(late.media().connection().close_reason().is_none());
    assert!(
        relay.stats.snapshot().closes.is_empty(),
        "{:?}",
        relay.stats.snapshot().closes
    );
    relay.shutdown().await;
}
