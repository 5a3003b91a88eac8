//! A UDP forwarder that impairs the packets it carries, both ways: loss, delay with
//! jitter, reordering, and blackouts. Used where the kernel has no `netem` (and by
//! the soak, to make a client vanish without a word). Real QUIC packets, really lost.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::UdpSocket;

/// What the forwarder does to each packet.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Fault {
    /// Probability a packet is dropped.
    pub loss: f64,
    /// Fixed delay.
    pub delay: Duration,
    /// Uniform jitter around the delay (plus or minus).
    pub jitter: Duration,
    /// Probability a packet is held back 20 ms, so later ones overtake it.
    pub reorder: f64,
    /// Drop everything.
    pub blackout: bool,
}

struct State {
    fault: Fault,
    rng: u64,
}

impl State {
    fn uniform(&mut self) -> f64 {
        // xorshift64*
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        (self.rng.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 11) as f64 / (1u64 << 53) as f64
    }

    /// `None`: drop; else how long to hold the packet.
    fn fate(&mut self) -> Option<Duration> {
        let f = self.fault;
        if f.blackout || self.uniform() < f.loss {
            return None;
        }
        let jitter = f.jitter.as_secs_f64() * (2.0 * self.uniform() - 1.0);
        let mut hold = (f.delay.as_secs_f64() + jitter).max(0.0);
        if self.uniform() < f.reorder {
            hold += 0.020;
        }
        Some(Duration::from_secs_f64(hold))
    }
}

/// A running impairing forwarder.
pub struct Impair {
    /// Where clients send to.
    pub addr: SocketAddr,
    state: Arc<Mutex<State>>,
    task: tokio::task::JoinHandle<()>,
}

impl Impair {
    /// Forwards from a new loopback port to `upstream`, clean until [`Impair::set`].
    pub async fn start(upstream: SocketAddr, seed: u64) -> Impair {
        let front = Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
        let addr = front.local_addr().unwrap();
        let state = Arc::new(Mutex::new(State {
            fault: Fault::default(),
            rng: seed | 1,
        }));
        let task = tokio::spawn(forward(front, upstream, state.clone()));
        Impair { addr, state, task }
    }

    /// Applies `fault` from now on.
    pub fn set(&self, fault: Fault) {
        self.state.lock().unwrap().fault = fault;
    }
}

impl Drop for Impair {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Sends `packet` through `socket` after its fate allows.
fn relay_packet(state: &Mutex<State>, socket: Arc<UdpSocket>, packet: Vec<u8>, to: SocketAddr) {
    let Some(hold) = state.lock().unwrap().fate() else {
        return;
    };
    if hold.is_zero() {
        let _ = socket.try_send_to(&packet, to);
        return;
    }
    tokio::spawn(async move {
        tokio::time::sleep(hold).await;
        let _ = socket.send_to(&packet, to).await;
    });
}

async fn forward(front: Arc<UdpSocket>, upstream: SocketAddr, state: Arc<Mutex<State>>) {
    // One upstream socket per client address, each with its own return task.
    let mut backs: HashMap<SocketAddr, Arc<UdpSocket>> = HashMap::new();
    // Dropped with this task (on abort too), which aborts every return task.
    let mut returns = tokio::task::JoinSet::new();
    let mut buf = vec![0u8; 65_536];
    while let Ok((n, from)) = front.recv_from(&mut buf).await {
        let back = match backs.get(&from) {
            Some(b) => b.clone(),
            None => {
                let bind = if upstream.is_ipv4() {
                    "0.0.0.0:0"
                } else {
                    "[::]:0"
                };
                let back = Arc::new(UdpSocket::bind(bind).await.unwrap());
                backs.insert(from, back.clone());
                let (front, back2, state) = (front.clone(), back.clone(), state.clone());
                returns.spawn(async move {
                    let mut buf = vec![0u8; 65_536];
                    while let Ok((n, _)) = back2.recv_from(&mut buf).await {
                        relay_packet(&state, front.clone(), buf[..n].to_vec(), from);
                    }
                });
                back
            }
        };
        relay_packet(&state, back, buf[..n].to_vec(), upstream);
    }
}
