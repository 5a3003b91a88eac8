//! Hostile clients at the transport and admission layer, each beside a legitimate
//! meeting on the same relay: random bytes at the UDP port, QUIC with the wrong ALPN,
//! a Join trickled a byte at a time, a 4 GiB length prefix, and join/leave in a tight
//! loop. Each test proves its hostile path ran (a counter moved), that the client was
//! limited or closed with a specific code, that the relay's byte gauge and the process
//! RSS stayed within a stated bound, and that the legitimate meeting kept every object
//! within its latency budget. `--nocapture` prints the figures.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::legit::Legit;
use common::*;
use orelay_client::ClientError;
use orelay_proto::ErrorCode;

const GENEROUS: Duration = Duration::from_secs(30);
/// RSS growth allowed to the whole test process (relay and clients) during an attack.
const RSS_BOUND_KIB: i64 = 64 * 1024;
/// Queued bytes allowed: the legitimate meeting holds at most a group or two.
const QUEUED_BOUND: i64 = 256 * 1024;

/// UDP datagrams that reached a socket of this network namespace so far: delivered
/// (`InDatagrams`) or dropped at a full receive buffer (`RcvbufErrors`), from
/// `/proc/net/snmp`.
fn udp_datagrams_arrived() -> u64 {
    let snmp = std::fs::read_to_string("/proc/net/snmp").unwrap_or_default();
    let mut udp = snmp.lines().filter(|l| l.starts_with("Udp:"));
    let (Some(names), Some(values)) = (udp.next(), udp.next()) else {
        return 0;
    };
    let field = |name: &str| -> u64 {
        let at = names.split_whitespace().position(|n| n == name);
        at.and_then(|i| values.split_whitespace().nth(i)?.parse().ok())
            .unwrap_or(0)
    };
    field("InDatagrams") + field("RcvbufErrors")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_bytes_at_the_udp_port_are_dropped_without_a_trace() {
    let (relay, client) = start(config());
    let legit = Legit::start(&client, relay.addr, 1).await;
    let peaks = Peaks::start(&relay.stats);
    let before = relay.stats.snapshot();
    let in_before = udp_datagrams_arrived();
    const DATAGRAMS: u64 = 20_000;
    let junk = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    for i in 0..DATAGRAMS {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let len = 1 + (seed % 1_400) as usize;
        let mut buf: Vec<u8> = (0..len as u64)
            .map(|k| (seed.rotate_left((k % 64) as u32) >> 3) as u8)
            .collect();
        if i % 2 == 0 && len > 6 {
            // Half look like QUIC v1 Initials, so the relay must go as far as
            // trying to decrypt them before dropping them.
            buf[0] = 0xc0 | (buf[0] & 0x0f);
            buf[1..5].copy_from_slice(&1u32.to_be_bytes());
        }
        junk.send_to(&buf, relay.addr).await.unwrap();
    }
    let received = udp_datagrams_arrived() - in_before;
    let after = relay.stats.snapshot();
    println!(
        "random bytes: {DATAGRAMS} datagrams sent, {received} UDP datagrams arrived \
         at the host's sockets meanwhile; connections accepted {} -> {}",
        before.connections_accepted, after.connections_accepted
    );
    // Proof the junk reached a socket (the legitimate meeting's traffic counts too).
    assert!(received >= DATAGRAMS / 2, "{received}");
    // Quinn drops it before any connection exists: nothing to count, nothing held.
    assert_eq!(after.connections_accepted, before.connections_accepted);
    assert_eq!(after.connections_active, 2);
    assert!(after.closes.is_empty(), "{:?}", after.closes);
    peaks
        .stop()
        .assert_within("random bytes", QUEUED_BOUND, RSS_BOUND_KIB);
    legit.finish().await.assert_unhurt("random bytes");
    relay.shutdown().await;
}

/// Accepts any server certificate: the attacker does not care who it talks to.
#[derive(Debug)]
struct AnyCert(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AnyCert {
    fn verify_server_cert(
        &self,
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &[rustls::pki_types::CertificateDer<'_>],
        _: &rustls::pki_types::ServerName<'_>,
        _: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        _: &[u8],
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
    }
    fn verify_tls13_signature(
        &self,
        _: &[u8],
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quic_with_the_wrong_alpn_fails_its_handshake_and_is_counted() {
    let (relay, client) = start(config());
    let legit = Legit::start(&client, relay.addr, 1).await;
    let peaks = Peaks::start(&relay.stats);
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCert(provider)))
        .with_no_client_auth();
    tls.alpn_protocols = vec![b"h3".to_vec()];
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls).unwrap();
    let mut endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    endpoint.set_default_client_config(quinn::ClientConfig::new(Arc::new(crypto)));
    const ATTEMPTS: u64 = 300;
    let mut refused = 0;
    for _ in 0..ATTEMPTS {
        let attempt = endpoint.connect(relay.addr, "localhost").unwrap();
        match tokio::time::timeout(GENEROUS, attempt).await.unwrap() {
            // TLS alert 120, no_application_protocol, as a QUIC crypto error.
            Err(quinn::ConnectionError::ConnectionClosed(c))
                if c.error_code == quinn::TransportErrorCode::crypto(120) =>
            {
                refused += 1
            }
            other => panic!("the wrong ALPN got {other:?}"),
        }
    }
    let stats = relay.stats.clone();
    assert!(eventually(GENEROUS, || stats.snapshot().handshake_failures >= ATTEMPTS).await);
    let s = stats.snapshot();
    println!(
        "wrong ALPN: {refused}/{ATTEMPTS} refused with no_application_protocol, \
         handshake failures counted {}, connections active {}",
        s.handshake_failures, s.connections_active
    );
    assert_eq!(
        s.connections_active, 2,
        "only the legitimate meeting is connected"
    );
    peaks
        .stop()
        .assert_within("wrong ALPN", QUEUED_BOUND, RSS_BOUND_KIB);
    legit.finish().await.assert_unhurt("wrong ALPN");
    relay.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_join_trickled_a_byte_at_a_time_gets_in_only_within_the_join_deadline() {
    let mut cfg = config();
    cfg.join_timeout_ms = 3_000;
    let (relay, client) = start(cfg);
    let legit = Legit::start(&client, relay.addr, 1).await;
    let peaks = Peaks::start(&relay.stats);
    let join = raw_join(1);
    // Byte-at-a-time writes, each its own packet: `pace` apart.
    async fn trickle(
        conn: &quinn::Connection,
        bytes: &[u8],
        pace: Duration,
    ) -> (quinn::SendStream, quinn::RecvStream) {
        let (mut send, recv) = conn.open_bi().await.unwrap();
        for b in bytes {
            if send.write_all(&[*b]).await.is_err() {
                break;
            }
            tokio::time::sleep(pace).await;
        }
        (send, recv)
    }
    // A slow but honest trickle (the whole Join paced over a third of the deadline)
    // is reassembled and admitted.
    let honest = client.connect(relay.addr).await.unwrap();
    let pace = Duration::from_micros(1_000_000 / join.len() as u64);
    let (_send, mut recv) = trickle(&honest, &join, pace).await;
    let mut decoder = orelay_proto::ControlDecoder::<orelay_proto::ServerMessage>::new();
    let answer = loop {
        if let Some(m) = decoder.next().unwrap() {
            break m;
        }
        let chunk = tokio::time::timeout(GENEROUS, recv.read_chunk(4096, true))
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        decoder.push(&chunk.bytes);
    };
    assert!(
        matches!(
            answer,
            orelay_proto::ServerMessage::JoinResult(
                orelay_proto::control::JoinOutcome::Admitted { .. }
            )
        ),
        "{answer:?}"
    );
    // A hundred slowloris connections, one byte every 200 ms: each is closed at the
    // join deadline, whatever it has sent.
    const SLOW: usize = 100;
    let mut slow = Vec::new();
    for _ in 0..SLOW {
        let conn = client.connect(relay.addr).await.unwrap();
        let join = join.clone();
        slow.push(tokio::spawn(async move {
            let trickling = {
                let conn = conn.clone();
                tokio::spawn(async move { trickle(&conn, &join, Duration::from_millis(200)).await })
            };
            let code = close_code(&conn).await;
            trickling.abort();
            code
        }));
    }
    for t in slow {
        let code = tokio::time::timeout(GENEROUS, t).await.unwrap().unwrap();
        assert_eq!(code, Some(ErrorCode::JOIN_TIMEOUT.0.into()));
    }
    let s = relay.stats.snapshot();
    println!(
        "trickled join: honest trickle admitted ({} bytes, {pace:?} apart); {SLOW} slowloris \
         closed with JOIN_TIMEOUT ({:?})",
        join.len(),
        s.closes
    );
    assert_eq!(s.closes.len(), 1, "{s:?}");
    assert_eq!(s.closes.get("JOIN_TIMEOUT"), Some(&(SLOW as u64)), "{s:?}");
    assert_eq!(
        s.joins_admitted, 3,
        "the legitimate pair and the honest trickle"
    );
    peaks
        .stop()
        .assert_within("trickled join", QUEUED_BOUND, RSS_BOUND_KIB);
    legit.finish().await.assert_unhurt("trickled join");
    drop(honest);
    relay.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_4_gib_length_prefix_is_refused_before_any_allocation() {
    let (relay, client) = start(config());
    let legit = Legit::start(&client, relay.addr, 1).await;
    let peaks = Peaks::start(&relay.stats);
    // Type, then a length of 2^32 as an 8-byte varint, then a little of the "body".
    let huge = |ty: u8| {
        let mut b = vec![ty, 0xc0, 0, 0, 1, 0, 0, 0, 0];
        b.extend_from_slice(&[0x55; 1_000]);
        b
    };
    const EACH: usize = 20;
    for round in 0..EACH {
        // As the first message (a Join claiming 4 GiB)...
        let conn = client.connect(relay.addr).await.unwrap();
        let (mut send, _recv) = conn.open_bi().await.unwrap();
        let _ = send.write_all(&huge(0x01)).await;
        let code = close_code(&conn).await;
        assert_eq!(
            code,
            Some(ErrorCode::MESSAGE_TOO_LARGE.0.into()),
            "round {round}"
        );
        // ...and after joining (a Publish claiming 4 GiB).
        let (conn, mut send) = joined_raw(&client, relay.addr, 2).await;
        let _ = send.write_all(&huge(0x02)).await;
        let code = close_code(&conn).await;
        assert_eq!(
            code,
            Some(ErrorCode::MESSAGE_TOO_LARGE.0.into()),
            "round {round}"
        );
    }
    let s = relay.stats.snapshot();
    println!("4 GiB prefix: closes {:?}", s.closes);
    assert_eq!(s.closes.get("MESSAGE_TOO_LARGE"), Some(&(2 * EACH as u64)));
    peaks
        .stop()
        .assert_within("4 GiB prefix", QUEUED_BOUND, RSS_BOUND_KIB);
    legit.finish().await.assert_unhurt("4 GiB prefix");
    relay.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn join_and_leave_in_a_tight_loop_is_rate_limited_and_leaves_nothing_behind() {
    let mut cfg = config();
    // One second's worth is the burst: the loop outruns it within a second.
    cfg.max_join_rate = 100;
    let (relay, client) = start(cfg);
    let legit = Legit::start(&client, relay.addr, 1).await;
    let peaks = Peaks::start(&relay.stats);
    const CYCLES: u32 = 600;
    let (mut admitted, mut overloaded) = (0u64, 0u64);
    for i in 0..CYCLES {
        // Into the legitimate meeting, so its viewer sees every join and leave.
        match client
            .join(relay.addr, &meeting_id(1), "pw", &i.to_be_bytes())
            .await
        {
            Ok(s) => {
                admitted += 1;
                s.leave().await.unwrap();
            }
            // The hostile loop does not wait for `retry_after_ms`.
            Err(ClientError::Overloaded { .. }) => overloaded += 1,
            Err(e) => panic!("cycle {i}: {e}"),
        }
    }
    let stats = relay.stats.clone();
    assert!(
        eventually(GENEROUS, || {
            let s = stats.snapshot();
            s.participants_active == 2 && s.meetings_active == 1 && s.connections_active == 2
        })
        .await,
        "{:?}",
        stats.snapshot()
    );
    let s = stats.snapshot();
    println!(
        "join/leave loop: {CYCLES} cycles, {admitted} admitted and left, {overloaded} answered \
         Overloaded (counted {}); participants back to {}, coalesced announcements {}",
        s.joins_overloaded, s.participants_active, s.control_coalesced
    );
    assert!(overloaded > 0, "the join rate never applied");
    assert_eq!(s.joins_overloaded, overloaded);
    assert_eq!(s.joins_admitted, admitted + 2);
    assert!(s.closes.is_empty(), "{:?}", s.closes);
    peaks
        .stop()
        .assert_within("join/leave loop", QUEUED_BOUND, RSS_BOUND_KIB);
    legit.finish().await.assert_unhurt("join/leave loop");
    relay.shutdown().await;
}
