//! A deliberately tiny HTTP/1.1 server for `/metrics`, `/healthz` and `/readyz`.
//!
//! It answers `GET` (and `HEAD`) only, reads at most [`MAX_REQUEST`] bytes of request
//! head within [`REQUEST_TIMEOUT`], serves at most [`MAX_CONCURRENT`] clients at once,
//! and closes every connection after one response. That is all a Prometheus scraper,
//! a load balancer's health check or a kubelet probe needs, without an HTTP stack
//! (and its TLS provider) in the relay's dependency graph. It never reads a body.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tracing::debug;

/// Largest request head accepted; longer ones get `431`.
pub const MAX_REQUEST: usize = 8 * 1024;
/// Time a client has to send its request head.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Time a client has to read the response.
pub const RESPONSE_TIMEOUT: Duration = Duration::from_secs(10);
/// Clients served at once; more are closed without an answer.
pub const MAX_CONCURRENT: usize = 32;

/// What the server shows.
pub trait Endpoints: Send + Sync + 'static {
    /// The Prometheus text exposition.
    fn metrics(&self) -> String;
    /// `Ok` when the process should receive work; otherwise why not.
    fn readiness(&self) -> Result<(), &'static str>;
}

/// A bound metrics listener.
#[derive(Debug)]
pub struct MetricsServer {
    listener: TcpListener,
}

/// A response: status line and body.
struct Response {
    status: &'static str,
    content_type: &'static str,
    body: String,
}

impl Response {
    fn text(status: &'static str, body: impl Into<String>) -> Response {
        Response {
            status,
            content_type: "text/plain; charset=utf-8",
            body: body.into(),
        }
    }
}

impl MetricsServer {
    /// Binds the listener (port 0 picks a free one).
    pub async fn bind(addr: SocketAddr) -> std::io::Result<MetricsServer> {
        Ok(MetricsServer {
            listener: TcpListener::bind(addr).await?,
        })
    }

    /// Where it listens.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until the task is dropped.
    pub async fn serve(self, endpoints: Arc<dyn Endpoints>) {
        let slots = Arc::new(Semaphore::new(MAX_CONCURRENT));
        loop {
            let Ok((stream, _)) = self.listener.accept().await else {
                continue;
            };
            let Ok(permit) = slots.clone().try_acquire_owned() else {
                continue; // Over the limit: dropping the stream closes it.
            };
            let endpoints = endpoints.clone();
            tokio::spawn(async move {
                if let Err(e) = answer(stream, endpoints.as_ref()).await {
                    debug!(error = %e, "metrics request failed");
                }
                drop(permit);
            });
        }
    }
}

async fn answer(stream: TcpStream, endpoints: &dyn Endpoints) -> std::io::Result<()> {
    let head = tokio::time::timeout(REQUEST_TIMEOUT, read_head(&stream))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "request head"))??;
    let (response, head_only) = match head {
        Head::TooLarge => (
            Response::text("431 Request Header Fields Too Large", ""),
            false,
        ),
        Head::Closed => return Ok(()),
        Head::Complete(text) => route(&text, endpoints),
    };
    let mut out = format!(
        "HTTP/1.1 {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        response.status,
        response.content_type,
        response.body.len()
    )
    .into_bytes();
    if !head_only {
        out.extend_from_slice(response.body.as_bytes());
    }
    tokio::time::timeout(RESPONSE_TIMEOUT, write_all(&stream, &out))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "response"))?
}

/// The request head, read up to its blank line.
enum Head {
    Complete(String),
    TooLarge,
    Closed,
}

async fn read_head(stream: &TcpStream) -> std::io::Result<Head> {
    let mut buf = vec![0u8; MAX_REQUEST];
    let mut len = 0;
    loop {
        stream.readable().await?;
        let n = match stream.try_read(&mut buf[len..]) {
            Ok(0) => return Ok(Head::Closed),
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        };
        len += n;
        if let Some(end) = buf[..len].windows(4).position(|w| w == b"\r\n\r\n") {
            return Ok(Head::Complete(
                String::from_utf8_lossy(&buf[..end]).into_owned(),
            ));
        }
        if len == buf.len() {
            return Ok(Head::TooLarge);
        }
    }
}

async fn write_all(stream: &TcpStream, mut data: &[u8]) -> std::io::Result<()> {
    while !data.is_empty() {
        stream.writable().await?;
        match stream.try_write(data) {
            Ok(n) => data = &data[n..],
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Picks the response for a request head; the flag says to send headers only (`HEAD`).
fn route(head: &str, endpoints: &dyn Endpoints) -> (Response, bool) {
    let mut parts = head.lines().next().unwrap_or("").split(' ');
    let (method, target, version) = (parts.next(), parts.next(), parts.next());
    let (Some(method), Some(target), Some(version)) = (method, target, version) else {
        return (
            Response::text("400 Bad Request", "bad request line\n"),
            false,
        );
    };
    if !version.starts_with("HTTP/1.") {
        return (Response::text("400 Bad Request", "HTTP/1.x only\n"), false);
    }
    let head_only = match method {
        "GET" => false,
        "HEAD" => true,
        _ => {
            return (
                Response::text("405 Method Not Allowed", "GET only\n"),
                false,
            )
        }
    };
    let path = target.split('?').next().unwrap_or(target);
    let response = match path {
        "/metrics" => Response {
            status: "200 OK",
            content_type: "text/plain; version=0.0.4; charset=utf-8",
            body: endpoints.metrics(),
        },
        "/healthz" => Response::text("200 OK", "ok\n"),
        "/readyz" => match endpoints.readiness() {
            Ok(()) => Response::text("200 OK", "ready\n"),
            Err(why) => Response::text("503 Service Unavailable", format!("not ready: {why}\n")),
        },
        _ => Response::text("404 Not Found", "try /metrics, /healthz or /readyz\n"),
    };
    (response, head_only)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering::Relaxed};

    struct Fake(AtomicBool);

    impl Endpoints for Fake {
        fn metrics(&self) -> String {
            "# TYPE x gauge\nx 1\n".into()
        }
        fn readiness(&self) -> Result<(), &'static str> {
            if self.0.load(Relaxed) {
                Ok(())
            } else {
                Err("draining")
            }
        }
    }

    async fn get(addr: SocketAddr, request: &[u8]) -> String {
        let stream = TcpStream::connect(addr).await.unwrap();
        write_all(&stream, request).await.unwrap();
        let mut out = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            stream.readable().await.unwrap();
            match stream.try_read(&mut buf) {
                Ok(0) => break,
                Ok(n) => out.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                Err(e) => panic!("{e}"),
            }
        }
        String::from_utf8(out).unwrap()
    }

    #[tokio::test]
    async fn serves_metrics_health_and_readiness_and_refuses_the_rest() {
        let server = MetricsServer::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
            .await
            .unwrap();
        let addr = server.local_addr().unwrap();
        let fake = Arc::new(Fake(AtomicBool::new(true)));
        let task = tokio::spawn(server.serve(fake.clone()));
        let r = get(addr, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").await;
        assert!(r.starts_with("HTTP/1.1 200 OK\r\n"), "{r}");
        assert!(r.ends_with("\r\n\r\n# TYPE x gauge\nx 1\n"), "{r}");
        let r = get(addr, b"GET /healthz HTTP/1.0\r\n\r\n").await;
        assert!(
            r.starts_with("HTTP/1.1 200 OK\r\n") && r.ends_with("ok\n"),
            "{r}"
        );
        let r = get(addr, b"GET /readyz?verbose HTTP/1.1\r\n\r\n").await;
        assert!(r.starts_with("HTTP/1.1 200 OK\r\n"), "{r}");
        fake.0.store(false, Relaxed);
        let r = get(addr, b"GET /readyz HTTP/1.1\r\n\r\n").await;
        assert!(r.starts_with("HTTP/1.1 503 "), "{r}");
        assert!(r.ends_with("not ready: draining\n"), "{r}");
        let r = get(addr, b"HEAD /metrics HTTP/1.1\r\n\r\n").await;
        assert!(
            r.starts_with("HTTP/1.1 200 OK\r\n") && r.ends_with("\r\n\r\n"),
            "{r}"
        );
        let r = get(addr, b"POST /metrics HTTP/1.1\r\n\r\n").await;
        assert!(r.starts_with("HTTP/1.1 405 "), "{r}");
        let r = get(addr, b"GET /nope HTTP/1.1\r\n\r\n").await;
        assert!(r.starts_with("HTTP/1.1 404 "), "{r}");
        let r = get(addr, b"garbage\r\n\r\n").await;
        assert!(r.starts_with("HTTP/1.1 400 "), "{r}");
        let huge = vec![b'a'; MAX_REQUEST];
        let r = get(addr, &huge).await;
        assert!(r.starts_with("HTTP/1.1 431 "), "{r}");
        task.abort();
    }
}
