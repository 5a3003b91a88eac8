//! `raw-forwarder`: the baseline for the fan-out benchmark (`scripts/bench-fanout.sh`).
//!
//! A minimal quinn server with the relay's TLS set-up (TLS 1.3, ALPN `orelay/1`, ring)
//! and transport limits, speaking just enough of the relay's protocol for the load
//! tool: it reads the `Join` on the control stream and answers `Admitted`; the join's
//! `info` says the role (`pub` publishes, anything else subscribes). Every later
//! control message is read and ignored. Then, and nothing else:
//!
//! - each uni stream from a publisher becomes one uni stream per subscriber, forwarded
//!   chunk by chunk (`read_chunk` → `write_chunk` of `Bytes` clones, one task per
//!   subscriber stream, at most [`STREAM_BUFFER_CHUNKS`] chunks queued per stream; a
//!   subscriber stream that overflows is reset with `GROUP_DROPPED`);
//! - each datagram from a publisher is sent to every subscriber.
//!
//! No meetings, passcodes, tracks, subscriptions, priorities or limits.

use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

use anyhow::Context;
use bytes::Bytes;
use clap::Parser;
use orelay_proto::control::{ControlMessage, JoinOutcome};
use orelay_proto::{ClientMessage, ControlDecoder, ErrorCode, ServerMessage};
use socket2::{Domain, Protocol, Socket, Type};
use tokio::sync::mpsc;

/// Chunks queued towards one subscriber stream before that stream is dropped.
const STREAM_BUFFER_CHUNKS: usize = 64;

/// Largest chunk read from a publisher stream at once.
const READ_CHUNK: usize = 64 * 1024;

/// Command line.
#[derive(Debug, Parser)]
#[command(about = "Raw quinn fan-out forwarder: the baseline for scripts/bench-fanout.sh")]
struct Cli {
    /// UDP address to serve on (port 0 picks a free one).
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// UDP socket buffer size in bytes, send and receive (the relay's default).
    #[arg(long, default_value_t = 8 * 1024 * 1024)]
    udp_buffer_bytes: usize,
    /// Milliseconds of silence before a connection is dropped (the relay's default).
    #[arg(long, default_value_t = 30_000)]
    idle_timeout_ms: u64,
}

/// The connected subscribers.
#[derive(Default)]
struct Hub {
    subscribers: Mutex<Vec<(u64, quinn::Connection)>>,
    next_id: AtomicU64,
}

impl Hub {
    fn snapshot(&self) -> Vec<quinn::Connection> {
        let subs = self.subscribers.lock().unwrap_or_else(|p| p.into_inner());
        subs.iter().map(|(_, c)| c.clone()).collect()
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let (config, fingerprint) = server_config(&cli)?;
    let socket = bind_socket(cli.listen, cli.udp_buffer_bytes)?;
    let runtime = quinn::default_runtime().context("no async runtime")?;
    let endpoint = quinn::Endpoint::new(
        quinn::EndpointConfig::default(),
        Some(config),
        socket,
        runtime,
    )?;
    println!(
        "raw-forwarder listening on {} (QUIC, ALPN orelay/1)",
        endpoint.local_addr()?
    );
    println!("certificate sha256 fingerprint: {fingerprint}");
    let hub = Arc::new(Hub::default());
    while let Some(incoming) = endpoint.accept().await {
        let hub = hub.clone();
        tokio::spawn(async move {
            if let Ok(conn) = incoming.await {
                let _ = serve(hub, conn).await;
            }
        });
    }
    Ok(())
}

/// The relay's own TLS and transport settings (`orelay_relay::tls::server_config`,
/// `orelay_relay::endpoint::transport_config`): the same cipher suite, windows and
/// limits, so the comparison measures forwarding and nothing else.
fn server_config(cli: &Cli) -> anyhow::Result<(quinn::ServerConfig, String)> {
    let identity = orelay_relay::tls::Identity::self_signed()?;
    let fingerprint = identity.fingerprint();
    let relay = orelay_relay::Config {
        idle_timeout_ms: cli.idle_timeout_ms,
        ..orelay_relay::Config::default()
    };
    let transport = orelay_relay::endpoint::transport_config(&relay);
    Ok((
        orelay_relay::tls::server_config(identity, transport)?,
        fingerprint,
    ))
}

/// A UDP socket with the relay's buffer sizes (the kernel may cap them, as for the relay).
fn bind_socket(addr: SocketAddr, buffer: usize) -> anyhow::Result<UdpSocket> {
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    let _ = socket.set_recv_buffer_size(buffer);
    let _ = socket.set_send_buffer_size(buffer);
    socket.bind(&addr.into())?;
    Ok(socket.into())
}

/// One connection: the join handshake, then forwarding (publisher) or nothing (subscriber).
async fn serve(hub: Arc<Hub>, conn: quinn::Connection) -> anyhow::Result<()> {
    let (mut send, mut recv) = conn.accept_bi().await?;
    let mut decoder = ControlDecoder::<ClientMessage>::new();
    let info = loop {
        if let Some(msg) = decoder.next()? {
            match msg {
                ClientMessage::Join { info, .. } => break info,
                _ => anyhow::bail!("first message was not Join"),
            }
        }
        let chunk = recv
            .read_chunk(16 * 1024, true)
            .await?
            .context("control stream ended before Join")?;
        decoder.push(&chunk.bytes);
    };
    let id = hub.next_id.fetch_add(1, Relaxed) + 1;
    let admitted = ServerMessage::JoinResult(JoinOutcome::Admitted {
        participant: id,
        role: orelay_proto::Role::Participant,
    });
    send.write_all(&admitted.to_bytes()).await?;
    // Later control messages (Publish, Subscribe, ...) are read and ignored.
    tokio::spawn(async move {
        let _keep = send;
        while let Ok(Some(_)) = recv.read_chunk(16 * 1024, true).await {}
    });
    if info.as_ref() == b"pub" {
        let streams = tokio::spawn(forward_streams(hub.clone(), conn.clone()));
        while let Ok(datagram) = conn.read_datagram().await {
            for sub in hub.snapshot() {
                let _ = sub.send_datagram(datagram.clone());
            }
        }
        streams.abort();
    } else {
        hub.subscribers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((id, conn.clone()));
        conn.closed().await;
        hub.subscribers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|(sub, _)| *sub != id);
    }
    Ok(())
}

/// Accepts a publisher's uni streams and forwards each one.
async fn forward_streams(hub: Arc<Hub>, conn: quinn::Connection) {
    while let Ok(recv) = conn.accept_uni().await {
        tokio::spawn(forward_stream(recv, hub.snapshot()));
    }
}

/// One outgoing copy of a stream: its chunk queue and whether it overflowed.
struct Copy {
    tx: Option<mpsc::Sender<Bytes>>,
    overflowed: Arc<AtomicBool>,
}

/// Forwards one publisher stream to one new stream per subscriber.
async fn forward_stream(mut recv: quinn::RecvStream, subscribers: Vec<quinn::Connection>) {
    let mut copies: Vec<Copy> = subscribers
        .into_iter()
        .map(|conn| {
            let (tx, rx) = mpsc::channel(STREAM_BUFFER_CHUNKS);
            let overflowed = Arc::new(AtomicBool::new(false));
            tokio::spawn(write_copy(conn, rx, overflowed.clone()));
            Copy {
                tx: Some(tx),
                overflowed,
            }
        })
        .collect();
    loop {
        match recv.read_chunk(READ_CHUNK, true).await {
            Ok(Some(chunk)) => {
                for copy in &mut copies {
                    let Some(tx) = &copy.tx else { continue };
                    if tx.try_send(chunk.bytes.clone()).is_err() {
                        copy.overflowed.store(true, Relaxed);
                        copy.tx = None;
                    }
                }
            }
            Ok(None) => break,
            Err(_) => {
                // The publisher reset (or lost) the stream: reset every copy.
                for copy in &copies {
                    copy.overflowed.store(true, Relaxed);
                }
                break;
            }
        }
    }
}

/// Writes one subscriber's copy of a stream; finishes it, or resets it on overflow.
async fn write_copy(
    conn: quinn::Connection,
    mut rx: mpsc::Receiver<Bytes>,
    overflowed: Arc<AtomicBool>,
) {
    let Ok(mut send) = conn.open_uni().await else {
        return;
    };
    while let Some(chunk) = rx.recv().await {
        if send.write_chunk(chunk).await.is_err() {
            return;
        }
    }
    if overflowed.load(Relaxed) {
        let _ = send.reset(ErrorCode::GROUP_DROPPED.0.into());
    } else {
        let _ = send.finish();
    }
}
