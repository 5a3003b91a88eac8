//! The QUIC endpoint: binds the socket, accepts connections under the connection
//! caps, and shuts down cleanly. Each accepted connection runs in [`crate::session`].

use std::collections::HashMap;
use std::future::Future;
use std::net::{SocketAddr, UdpSocket};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use orelay_proto::ErrorCode;
use socket2::{Domain, Protocol, Socket, Type};
use tokio::sync::{oneshot, Semaphore};
use tracing::{info, warn};

use crate::config::Config;
use crate::core::MeetingId;
use crate::session::MeetingCell;
use crate::stats::RelayStats;
use crate::tls::{self, Identity};

/// State shared by every connection task of one relay.
pub(crate) struct Shared {
    pub(crate) config: Config,
    pub(crate) meetings: Mutex<HashMap<MeetingId, Arc<MeetingCell>>>,
    pub(crate) stats: Arc<RelayStats>,
    pub(crate) connections: Arc<Semaphore>,
    pub(crate) unjoined: Arc<Semaphore>,
}

/// A bound relay, ready to [`Relay::run`].
pub struct Relay {
    endpoint: quinn::Endpoint,
    shared: Arc<Shared>,
    fingerprint: String,
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
        let shared = Arc::new(Shared {
            connections: Arc::new(Semaphore::new(config.max_connections)),
            unjoined: Arc::new(Semaphore::new(config.max_unjoined)),
            config,
            meetings: Mutex::new(HashMap::new()),
            stats: Arc::new(RelayStats::default()),
        });
        Ok(Relay {
            endpoint,
            shared,
            fingerprint,
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

    /// Serves until `shutdown` completes, then closes every connection with
    /// `SHUTDOWN` and waits up to the configured grace period for them to go.
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        tokio::pin!(shutdown);
        loop {
            let incoming = tokio::select! {
                incoming = self.endpoint.accept() => incoming,
                () = &mut shutdown => break,
            };
            let Some(incoming) = incoming else { break };
            let shared = &self.shared;
            let permits = shared
                .connections
                .clone()
                .try_acquire_owned()
                .and_then(|c| shared.unjoined.clone().try_acquire_owned().map(|u| (c, u)));
            match permits {
                Ok((connection, unjoined)) => {
                    tokio::spawn(crate::session::run(
                        shared.clone(),
                        incoming,
                        connection,
                        unjoined,
                    ));
                }
                Err(_) => {
                    shared
                        .stats
                        .count_refused(match shared.connections.available_permits() {
                            0 => crate::telemetry::RefuseReason::ConnectionLimit,
                            _ => crate::telemetry::RefuseReason::UnjoinedLimit,
                        });
                    incoming.refuse();
                }
            }
        }
        self.shared.stats.set_draining();
        info!("shutting down: closing connections");
        self.endpoint
            .close(ErrorCode::SHUTDOWN.0.into(), b"relay shutting down");
        let grace = Duration::from_millis(self.shared.config.shutdown_grace_ms);
        if tokio::time::timeout(grace, self.endpoint.wait_idle())
            .await
            .is_err()
        {
            warn!("connections still open after the shutdown grace period");
        }
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
