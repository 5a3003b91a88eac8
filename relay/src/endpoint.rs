//! The QUIC endpoint: binds the socket, admits connections under the connection cap
//! and the waiting-connection book ([`Waiting`]), validates addresses with QUIC Retry
//! under pressure, and drains on shutdown (`GoAway`, then close). Each admitted
//! connection runs in [`crate::connection`].

use std::future::Future;
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use orelay_proto::ErrorCode;
use socket2::{Domain, Protocol, Socket, Type};
use tokio::sync::{oneshot, Semaphore};
use tracing::{info, warn};

use crate::core::guard::SourceKey;

use crate::config::Config;
use crate::connection::Admission;
use crate::core::Waiting;
use crate::registry::Shared;
use crate::stats::RelayStats;
use crate::telemetry::RefuseReason;
use crate::tls::{self, Identity};

/// The connections that have not joined yet, each with the sender that evicts it.
type WaitingBook = Arc<Mutex<Waiting<oneshot::Sender<()>>>>;

/// A bound relay, ready to [`Relay::run`].
pub struct Relay {
    endpoint: quinn::Endpoint,
    shared: Arc<Shared>,
    fingerprint: String,
    connections: Arc<Semaphore>,
    waiting: WaitingBook,
}

/// Takes a connection out of the waiting book once it joined or ended.
struct WaitingTicket {
    book: WaitingBook,
    id: u64,
}

impl Drop for WaitingTicket {
    fn drop(&mut self) {
        self.book
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(self.id);
    }
}

/// Transport settings that bound what one connection can make the relay buffer.
pub fn transport_config(config: &Config) -> quinn::TransportConfig {
    let mut t = quinn::TransportConfig::default();
    t.max_concurrent_bidi_streams(1u32.into())
        .max_concurrent_uni_streams(64u32.into())
        .stream_receive_window((1024u32 * 1024).into())
        .receive_window((4u32 * 1024 * 1024).into())
        .send_window(2 * 1024 * 1024)
        .datagram_receive_buffer_size(Some(64 * 1024))
        .datagram_send_buffer_size(64 * 1024)
        .max_idle_timeout(
            Duration::from_millis(config.idle_timeout_ms)
                .try_into()
                .ok(),
        );
    t
}

fn bind_socket(addr: SocketAddr, buffer: usize) -> anyhow::Result<UdpSocket> {
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))
        .context("creating the UDP socket")?;
    if addr.is_ipv6() {
        // Serve IPv4 too when bound to [::]; harmless on a specific address.
        let _ = socket.set_only_v6(false);
    }
    for (what, set, get) in [
        (
            "receive",
            Socket::set_recv_buffer_size as fn(&Socket, usize) -> std::io::Result<()>,
            Socket::recv_buffer_size as fn(&Socket) -> std::io::Result<usize>,
        ),
        (
            "send",
            Socket::set_send_buffer_size,
            Socket::send_buffer_size,
        ),
    ] {
        if let Err(e) = set(&socket, buffer) {
            warn!(error = %e, "could not set UDP {what} buffer");
        }
        // Linux reports twice the size it granted (the rest is bookkeeping).
        let granted = get(&socket).map(|got| {
            if cfg!(target_os = "linux") {
                got / 2
            } else {
                got
            }
        });
        if let Ok(granted) = granted {
            if granted < buffer {
                warn!(
                    requested = buffer,
                    granted,
                    "kernel capped the UDP {what} buffer; raise net.core.{}mem_max",
                    if what == "receive" { "r" } else { "w" }
                );
            }
        }
    }
    socket
        .bind(&addr.into())
        .with_context(|| format!("binding UDP {addr}"))?;
    Ok(socket.into())
}

impl Relay {
    /// Binds the endpoint described by `config`.
    pub fn bind(config: Config) -> anyhow::Result<Relay> {
        config.validate()?;
        let identity = match (&config.cert, &config.key) {
            (Some(cert), Some(key)) => Identity::from_pem_files(cert, key)?,
            _ => Identity::self_signed()?,
        };
        let fingerprint = identity.fingerprint();
        let server_config = tls::server_config(identity, transport_config(&config))?;
        let socket = bind_socket(config.listen, config.udp_buffer_bytes)?;
        let runtime = quinn::default_runtime().context("no async runtime")?;
        let endpoint = quinn::Endpoint::new(
            quinn::EndpointConfig::default(),
            Some(server_config),
            socket,
            runtime,
        )
        .context("starting the QUIC endpoint")?;
        let connections = Arc::new(Semaphore::new(config.max_connections));
        let waiting = Arc::new(Mutex::new(Waiting::new(
            config.max_unjoined,
            config.max_unjoined_per_source,
        )));
        let shared = Arc::new(Shared::new(config, Arc::new(RelayStats::default())));
        Ok(Relay {
            endpoint,
            shared,
            fingerprint,
            connections,
            waiting,
        })
    }

    /// The address the relay serves on.
    pub fn local_addr(&self) -> anyhow::Result<SocketAddr> {
        Ok(self.endpoint.local_addr()?)
    }

    /// SHA-256 fingerprint of the relay's certificate, lowercase hex.
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    /// The relay's live counters.
    pub fn stats(&self) -> Arc<RelayStats> {
        self.shared.stats.clone()
    }

    /// Serves until `shutdown` completes, then drains: stops admitting, tells every
    /// participant `GoAway`, waits up to the configured grace for them to leave, and
    /// closes whatever is left with `SHUTDOWN`.
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        tokio::pin!(shutdown);
        let upkeep = tokio::spawn(upkeep(Arc::downgrade(&self.shared)));
        loop {
            let incoming = tokio::select! {
                incoming = self.endpoint.accept() => incoming,
                () = &mut shutdown => break,
            };
            let Some(incoming) = incoming else { break };
            self.admit(incoming);
        }
        upkeep.abort();
        info!("draining: refusing new connections, sending GoAway");
        self.endpoint.set_server_config(None);
        self.shared.each_meeting(|cell| cell.lock().go_away());
        self.shared.stats.set_draining();
        let grace = Duration::from_millis(self.shared.config.shutdown_grace_ms);
        if tokio::time::timeout(grace, self.endpoint.wait_idle())
            .await
            .is_err()
        {
            warn!("connections still open after the shutdown grace period; closing them");
        }
        self.endpoint
            .close(ErrorCode::SHUTDOWN.0.into(), b"relay shutting down");
        let _ = tokio::time::timeout(Duration::from_secs(1), self.endpoint.wait_idle()).await;
    }

    /// Admits one incoming connection attempt, or refuses it at the connection cap.
    /// Past half the waiting cap, addresses are validated first (QUIC Retry: a spoofed
    /// source never gets a connection) and the join deadline shortens.
    fn admit(&self, incoming: quinn::Incoming) {
        let shared = &self.shared;
        let Ok(permit) = self.connections.clone().try_acquire_owned() else {
            shared.stats.count_refused(RefuseReason::ConnectionLimit);
            incoming.refuse();
            return;
        };
        let source = incoming.remote_address().ip();
        // A source backing off after failed joins was told how long to wait; until
        // then it is refused at the door, before any handshake work.
        let backing_off = shared
            .guard()
            .backing_off(SourceKey::from(source), std::time::Instant::now());
        if backing_off {
            shared.stats.count_refused(RefuseReason::Backoff);
            incoming.refuse();
            return;
        }
        let mut book = self.waiting.lock().unwrap_or_else(|p| p.into_inner());
        let pressure = book.under_pressure();
        if pressure && !incoming.remote_address_validated() {
            drop(book);
            shared.stats.retries_sent.fetch_add(1, Relaxed);
            if incoming.retry().is_err() {
                shared.stats.count_refused(RefuseReason::RetryFailed);
            }
            return;
        }
        let (tx, rx) = oneshot::channel();
        let (id, evicted) = book.insert(source, tx);
        drop(book);
        // Dropping an evicted connection's sender resolves its task's `evicted`.
        drop(evicted);
        let config = &shared.config;
        let deadline = Duration::from_millis(if pressure {
            config.pressure_join_timeout_ms.min(config.join_timeout_ms)
        } else {
            config.join_timeout_ms
        });
        let admission = Admission {
            permit,
            evicted: rx,
            waiting: Box::new(WaitingTicket {
                book: self.waiting.clone(),
                id,
            }),
            deadline,
        };
        tokio::spawn(crate::connection::run(shared.clone(), incoming, admission));
    }

    /// Runs the relay on the current runtime in a background task; for tests and
    /// loadgen's in-process relay.
    pub fn spawn(self) -> anyhow::Result<RunningRelay> {
        let addr = self.local_addr()?;
        let fingerprint = self.fingerprint.clone();
        let stats = self.stats();
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(self.run(async {
            let _ = rx.await;
        }));
        Ok(RunningRelay {
            addr,
            fingerprint,
            stats,
            stop: Some(tx),
            task,
        })
    }
}

/// A relay running in a background task.
#[derive(Debug)]
pub struct RunningRelay {
    /// Where it serves.
    pub addr: SocketAddr,
    /// Its certificate fingerprint.
    pub fingerprint: String,
    /// Its counters.
    pub stats: Arc<RelayStats>,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl RunningRelay {
    /// Shuts the relay down and waits for it to finish.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = (&mut self.task).await;
    }
}

/// How often the join guard forgets idle sources and the at-risk gauge is refreshed.
const UPKEEP_INTERVAL: Duration = Duration::from_secs(5);

/// Periodic housekeeping while the relay runs.
async fn upkeep(shared: std::sync::Weak<Shared>) {
    let mut tick = tokio::time::interval(UPKEEP_INTERVAL);
    loop {
        tick.tick().await;
        let Some(shared) = shared.upgrade() else {
            return;
        };
        let now = std::time::Instant::now();
        let mut guard = shared.guard();
        guard.sweep(now);
        let at_risk = guard.at_risk(now) as i64;
        drop(guard);
        shared
            .stats
            .meetings_at_risk
            .store(at_risk, std::sync::atomic::Ordering::Relaxed);
    }
}
