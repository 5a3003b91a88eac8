//! Client library for Oblivious Relay: connect with a pinned certificate, join a
//! meeting, publish and subscribe, and send and receive media objects.
//!
//! Used by `loadgen` and the relay's integration tests. It carries media payloads as
//! opaque bytes: encryption is the caller's business (loadgen seals every payload).
#![forbid(unsafe_code)]

mod media;
pub mod secure;
mod tls;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use orelay_proto::control::{ControlMessage, JoinOutcome};
use orelay_proto::{
    ClientMessage, ControlDecoder, Credential, DecodeError, ErrorCode, ParticipantId, RejectReason,
    Role, ServerMessage, TrackId, TrackInfo, PROTOCOL_VERSION,
};
use tokio::sync::mpsc;

pub use media::{GroupReader, GroupWriter, Media, Object};
pub use tls::parse_fingerprint;

/// What can go wrong for a client.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The local endpoint could not be set up.
    #[error("endpoint: {0}")]
    Endpoint(#[from] std::io::Error),
    /// The connection attempt could not start.
    #[error("connect: {0}")]
    Connect(#[from] quinn::ConnectError),
    /// The connection failed or was closed.
    #[error("connection: {0}")]
    Connection(#[from] quinn::ConnectionError),
    /// The relay rejected the join.
    #[error("join rejected: {0}")]
    Rejected(RejectReason),
    /// The relay is overloaded.
    #[error("relay overloaded, retry after {retry_after_ms} ms")]
    Overloaded {
        /// Suggested back-off.
        retry_after_ms: u64,
    },
    /// Too many join attempts from this address or on this meeting.
    #[error("join attempts throttled, retry after {retry_after_ms} ms")]
    Throttled {
        /// Required back-off (it grows with further failed attempts).
        retry_after_ms: u64,
    },
    /// The relay sent bytes that do not decode.
    #[error("protocol: {0}")]
    Protocol(#[from] DecodeError),
    /// The relay sent a message out of order.
    #[error("unexpected message from relay: {0}")]
    Unexpected(&'static str),
    /// Writing to a stream failed.
    #[error("write: {0}")]
    Write(#[from] quinn::WriteError),
    /// Reading from a stream failed.
    #[error("read: {0}")]
    Read(#[from] quinn::ReadError),
    /// Sending a datagram failed.
    #[error("datagram: {0}")]
    Datagram(#[from] quinn::SendDatagramError),
    /// A stream was reset by the relay with this code (for example `GROUP_DROPPED`).
    #[error("stream reset: {0}")]
    Reset(ErrorCode),
    /// The TLS configuration could not be built.
    #[error("tls: {0}")]
    Tls(String),
}

/// Gives the credential for a join to a meeting (for example by asking the operator's
/// meeting service for a signed token).
pub type CredentialSource = Arc<dyn Fn(&str) -> Credential + Send + Sync>;

/// A QUIC client endpoint that trusts one relay certificate by its SHA-256 fingerprint.
#[derive(Clone)]
pub struct Client {
    endpoint: quinn::Endpoint,
    credentials: Option<CredentialSource>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("endpoint", &self.endpoint)
            .field("credentials", &self.credentials.is_some())
            .finish()
    }
}

/// Everything a join carries.
#[derive(Debug, Clone, Default)]
pub struct JoinRequest {
    /// The meeting.
    pub meeting_id: String,
    /// Its passcode, if it has one.
    pub passcode: String,
    /// Opaque info for the others (for example a sealed display name).
    pub info: Vec<u8>,
    /// A signed token or, in open mode, the host secret.
    pub credential: Credential,
    /// Opaque public-key bundle for end-to-end encryption.
    pub keys: bytes::Bytes,
}

/// Transport settings for client connections: room for many concurrent group streams.
pub fn default_transport() -> quinn::TransportConfig {
    let mut t = quinn::TransportConfig::default();
    t.max_concurrent_uni_streams(512u32.into())
        .max_concurrent_bidi_streams(0u32.into())
        .stream_receive_window((1024u32 * 1024).into())
        .receive_window((8u32 * 1024 * 1024).into())
        .datagram_receive_buffer_size(Some(256 * 1024))
        .keep_alive_interval(Some(Duration::from_secs(5)))
        .max_idle_timeout(Duration::from_secs(30).try_into().ok());
    t
}

impl Client {
    /// A client endpoint bound to `bind` (for example `127.0.0.1:0`) that accepts only a
    /// relay certificate with this SHA-256 fingerprint.
    pub fn new(bind: SocketAddr, fingerprint: [u8; 32]) -> Result<Client, ClientError> {
        Client::with_transport(bind, fingerprint, default_transport())
    }

    /// Like [`Client::new`] with custom transport settings (for example a small receive
    /// window to play a slow subscriber).
    pub fn with_transport(
        bind: SocketAddr,
        fingerprint: [u8; 32],
        transport: quinn::TransportConfig,
    ) -> Result<Client, ClientError> {
        let mut endpoint = quinn::Endpoint::client(bind)?;
        let crypto = tls::pinned_client_config(fingerprint)?;
        let mut config = quinn::ClientConfig::new(Arc::new(crypto));
        config.transport_config(Arc::new(transport));
        endpoint.set_default_client_config(config);
        Ok(Client {
            endpoint,
            credentials: None,
        })
    }

    /// Uses `source` for the credential of every [`Client::join`].
    pub fn with_credentials(mut self, source: CredentialSource) -> Client {
        self.credentials = Some(source);
        self
    }

    /// Opens a connection to a relay.
    pub async fn connect(&self, relay: SocketAddr) -> Result<quinn::Connection, ClientError> {
        Ok(self.connecting(relay)?.await?)
    }

    /// Starts a connection to a relay and returns the handshake in progress, for
    /// callers that time its phases (first server flight, then TLS complete).
    pub fn connecting(&self, relay: SocketAddr) -> Result<quinn::Connecting, ClientError> {
        Ok(self.endpoint.connect(relay, "localhost")?)
    }

    /// Connects and joins a meeting in one step, with the credential from this
    /// client's [`CredentialSource`] (none without one). Waits in the waiting room if
    /// the relay puts it there.
    pub async fn join(
        &self,
        relay: SocketAddr,
        meeting_id: &str,
        passcode: &str,
        info: &[u8],
    ) -> Result<Session, ClientError> {
        let request = JoinRequest {
            meeting_id: meeting_id.to_owned(),
            passcode: passcode.to_owned(),
            info: info.to_vec(),
            credential: self
                .credentials
                .as_ref()
                .map_or(Credential::None, |source| source(meeting_id)),
            keys: bytes::Bytes::new(),
        };
        self.join_with(relay, &request).await
    }

    /// Connects and joins with an explicit request.
    pub async fn join_with(
        &self,
        relay: SocketAddr,
        request: &JoinRequest,
    ) -> Result<Session, ClientError> {
        let conn = self.connect(relay).await?;
        Session::join_with(conn, request).await
    }

    /// Waits for every connection of this endpoint to close (after they were closed).
    pub async fn wait_idle(&self) {
        self.endpoint.wait_idle().await;
    }
}

/// A joined participant: its control stream, events from the relay, and its media handle.
#[derive(Debug)]
pub struct Session {
    participant: ParticipantId,
    role: Role,
    waited: bool,
    send: quinn::SendStream,
    events: mpsc::Receiver<Result<ServerMessage, ClientError>>,
    media: Media,
}

impl Session {
    /// Opens the control stream on `conn` and joins with no credential (open mode).
    /// On rejection the connection is closed.
    pub async fn join(
        conn: quinn::Connection,
        meeting_id: &str,
        passcode: &str,
        info: &[u8],
    ) -> Result<Session, ClientError> {
        let request = JoinRequest {
            meeting_id: meeting_id.to_owned(),
            passcode: passcode.to_owned(),
            info: info.to_vec(),
            ..JoinRequest::default()
        };
        Session::join_with(conn, &request).await
    }

    /// Opens the control stream on `conn` and joins. If the relay puts it in the
    /// waiting room, waits until a host admits it (or denies it: `Rejected(DENIED)`).
    /// On rejection the connection is closed.
    pub async fn join_with(
        conn: quinn::Connection,
        request: &JoinRequest,
    ) -> Result<Session, ClientError> {
        let (mut send, recv) = conn.open_bi().await?;
        let join = ClientMessage::Join {
            version: PROTOCOL_VERSION,
            meeting_id: request.meeting_id.clone(),
            passcode: request.passcode.clone(),
            info: bytes::Bytes::copy_from_slice(&request.info),
            credential: request.credential.clone(),
            keys: request.keys.clone(),
        };
        send.write_all(&join.to_bytes()).await?;
        let (tx, mut events) = mpsc::channel(4096);
        tokio::spawn(read_control(recv, tx));
        let mut waited = false;
        loop {
            let first = events.recv().await;
            let outcome = match first {
                Some(Ok(ServerMessage::JoinResult(outcome))) => outcome,
                Some(Ok(_)) => {
                    return Err(ClientError::Unexpected("first message was not JoinResult"))
                }
                Some(Err(e)) => return Err(closed_while_joining(&conn, e)),
                None => {
                    return Err(closed_while_joining(
                        &conn,
                        ClientError::Unexpected("control stream closed before JoinResult"),
                    ))
                }
            };
            let give_up = |why: &'static [u8], err| {
                conn.close(ErrorCode::NO_ERROR.0.into(), why);
                Err(err)
            };
            match outcome {
                JoinOutcome::Admitted { participant, role } => {
                    return Ok(Session {
                        participant,
                        role,
                        waited,
                        send,
                        events,
                        media: Media::new(conn, participant),
                    })
                }
                JoinOutcome::Waiting { .. } => waited = true,
                JoinOutcome::Rejected { reason } => {
                    return give_up(b"rejected", ClientError::Rejected(reason))
                }
                JoinOutcome::Overloaded { retry_after_ms } => {
                    return give_up(b"overloaded", ClientError::Overloaded { retry_after_ms })
                }
                JoinOutcome::Throttled { retry_after_ms } => {
                    return give_up(b"throttled", ClientError::Throttled { retry_after_ms })
                }
            }
        }
    }

    /// This participant's role.
    pub fn role(&self) -> Role {
        self.role
    }

    /// Whether it waited in the waiting room before it was admitted.
    pub fn waited(&self) -> bool {
        self.waited
    }

    /// This participant's ID in the meeting.
    pub fn participant(&self) -> ParticipantId {
        self.participant
    }

    /// A cloneable handle for sending and receiving media.
    pub fn media(&self) -> Media {
        self.media.clone()
    }

    /// Sends any control message.
    pub async fn send(&mut self, msg: &ClientMessage) -> Result<(), ClientError> {
        self.send.write_all(&msg.to_bytes()).await?;
        Ok(())
    }

    /// Announces a track.
    pub async fn publish(&mut self, info: TrackInfo) -> Result<(), ClientError> {
        self.send(&ClientMessage::Publish(info)).await
    }

    /// Subscribes to a layer of another participant's track.
    pub async fn subscribe(
        &mut self,
        publisher: ParticipantId,
        track: TrackId,
        layer: u8,
    ) -> Result<(), ClientError> {
        self.send(&ClientMessage::Subscribe {
            publisher,
            track,
            layer,
        })
        .await
    }

    /// The next control message from the relay; `None` once the control stream ends.
    pub async fn next_event(&mut self) -> Option<Result<ServerMessage, ClientError>> {
        self.events.recv().await
    }

    /// A control message if one is already waiting.
    pub fn try_event(&mut self) -> Option<Result<ServerMessage, ClientError>> {
        self.events.try_recv().ok()
    }

    /// Sends `Leave` and waits (briefly) for the relay to close the connection.
    pub async fn leave(mut self) -> Result<(), ClientError> {
        self.send(&ClientMessage::Leave).await?;
        let conn = self.media.connection().clone();
        if tokio::time::timeout(Duration::from_secs(2), conn.closed())
            .await
            .is_err()
        {
            conn.close(ErrorCode::NO_ERROR.0.into(), b"left");
        }
        Ok(())
    }
}

/// Decodes the relay's control stream into events until it ends or fails.
async fn read_control(
    mut recv: quinn::RecvStream,
    tx: mpsc::Sender<Result<ServerMessage, ClientError>>,
) {
    let mut decoder = ControlDecoder::<ServerMessage>::new();
    loop {
        loop {
            match decoder.next() {
                Ok(Some(msg)) => {
                    if tx.send(Ok(msg)).await.is_err() {
                        return;
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    let _ = tx.send(Err(e.into())).await;
                    return;
                }
            }
        }
        match recv.read_chunk(16 * 1024, true).await {
            Ok(Some(chunk)) => decoder.push(&chunk.bytes),
            Ok(None) => return,
            Err(e) => {
                let _ = tx.send(Err(e.into())).await;
                return;
            }
        }
    }
}

/// The error for a connection that ended while joining: a host's denial or removal
/// (close codes `DENIED`, `REMOVED`) becomes the matching rejection.
fn closed_while_joining(conn: &quinn::Connection, err: ClientError) -> ClientError {
    if let Some(quinn::ConnectionError::ApplicationClosed(close)) = conn.close_reason() {
        match ErrorCode::from_quic(close.error_code.into_inner()) {
            ErrorCode::DENIED => return ClientError::Rejected(RejectReason::DENIED),
            ErrorCode::REMOVED => return ClientError::Rejected(RejectReason::REMOVED),
            _ => {}
        }
    }
    err
}
