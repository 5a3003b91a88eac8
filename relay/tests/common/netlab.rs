//! A network namespace for the relay, joined to this one by a veth pair, with faults
//! applied by `tc netem` where the kernel has it and by an [`Impair`] forwarder where
//! it does not. Torn down on drop. `None` (and a printed reason) where namespaces
//! cannot be created: not root, or no `ip`.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering::Relaxed};

use super::impair::{Fault, Impair};

/// Where iproute2 (Debian: `apt-get install iproute2`) puts `ip` and `tc`, which may
/// not be on a test runner's `PATH`.
const TOOL_DIRS: [&str; 4] = ["/usr/sbin", "/sbin", "/usr/bin", "/bin"];

/// The path of iproute2's `name` (`ip` or `tc`), if installed.
pub fn tool(name: &str) -> Option<String> {
    TOOL_DIRS
        .iter()
        .map(|d| format!("{d}/{name}"))
        .find(|p| std::path::Path::new(p).exists())
}

/// `ip`, or the bare name (for a message) if missing.
pub fn ip() -> String {
    tool("ip").unwrap_or_else(|| "ip".into())
}

/// A number unique within this process.
pub fn unique() -> u32 {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    NEXT.fetch_add(1, Relaxed)
}

fn run(program: &str, args: &[&str]) -> bool {
    Command::new(program)
        .args(args)
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

/// How faults are applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// `tc netem` on both ends of the veth pair.
    Netem,
    /// The kernel has no netem: an impairing forwarder in front of the veth pair.
    Forwarder,
}

/// A namespace with the relay's end of a veth pair.
pub struct NetLab {
    ip: String,
    tc: String,
    /// The namespace's name.
    pub ns: String,
    host_if: String,
    ns_if: String,
    /// The relay side's address (inside the namespace).
    pub relay_ip: IpAddr,
    /// How faults are applied.
    pub mode: Mode,
}

impl NetLab {
    /// Creates the namespace and veth pair, or says why not.
    pub fn new() -> Result<NetLab, String> {
        let (Some(ip), Some(tc)) = (tool("ip"), tool("tc")) else {
            return Err("`ip` or `tc` missing (install iproute2)".into());
        };
        // Only root may create namespaces and links here.
        let uid = std::fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|s| {
                let l = s.lines().find(|l| l.starts_with("Uid:"))?.to_owned();
                l.split_whitespace().nth(1).map(str::to_owned)
            });
        if uid.as_deref() != Some("0") {
            return Err("not root".into());
        }
        // Unique per test binary (pid) and per test within it: names and a /30.
        let (p, u) = (std::process::id() % 250, unique() % 60);
        let ns = format!("orelay-f{p}-{u}");
        let (host_if, ns_if) = (format!("orf{p}x{u}h"), format!("orf{p}x{u}n"));
        let relay_ip = Ipv4Addr::new(10, 213, p as u8, (u * 4 + 1) as u8);
        let host_ip = Ipv4Addr::new(10, 213, p as u8, (u * 4 + 2) as u8);
        if !run(&ip, &["netns", "add", &ns]) {
            return Err(format!("`ip netns add {ns}` failed"));
        }
        let mut lab = NetLab {
            ip: ip.clone(),
            tc: tc.clone(),
            ns: ns.clone(),
            host_if: host_if.clone(),
            ns_if: ns_if.clone(),
            relay_ip: IpAddr::V4(relay_ip),
            mode: Mode::Forwarder,
        };
        let ok = run(
            &ip,
            &[
                "link", "add", &host_if, "type", "veth", "peer", "name", &ns_if, "netns", &ns,
            ],
        ) && run(
            &ip,
            &["addr", "add", &format!("{host_ip}/30"), "dev", &host_if],
        ) && run(&ip, &["link", "set", &host_if, "up"])
            && run(
                &ip,
                &[
                    "-n",
                    &ns,
                    "addr",
                    "add",
                    &format!("{relay_ip}/30"),
                    "dev",
                    &ns_if,
                ],
            )
            && run(&ip, &["-n", &ns, "link", "set", &ns_if, "up"])
            && run(&ip, &["-n", &ns, "link", "set", "lo", "up"]);
        if !ok {
            return Err("could not set up the veth pair".into());
        }
        let netem = run(
            &tc,
            &[
                "qdisc", "add", "dev", &host_if, "root", "netem", "delay", "0ms",
            ],
        ) && run(
            &ip,
            &[
                "netns", "exec", &ns, &tc, "qdisc", "add", "dev", &ns_if, "root", "netem", "delay",
                "0ms",
            ],
        );
        if netem {
            lab.mode = Mode::Netem;
        }
        Ok(lab)
    }

    /// The netem arguments for `fault`.
    fn netem_args(fault: Fault) -> Vec<String> {
        if fault.blackout {
            return vec!["loss".into(), "100%".into()];
        }
        let mut a = vec![
            "delay".into(),
            format!("{}ms", fault.delay.as_millis()),
            format!("{}ms", fault.jitter.as_millis()),
        ];
        if fault.loss > 0.0 {
            a.extend(["loss".into(), format!("{}%", fault.loss * 100.0)]);
        }
        if fault.reorder > 0.0 {
            a.extend(["reorder".into(), format!("{}%", fault.reorder * 100.0)]);
        }
        a
    }

    /// Applies `fault` on both directions of the path (through `impair` in forwarder mode).
    pub fn set(&self, impair: Option<&Impair>, fault: Fault) {
        match self.mode {
            Mode::Forwarder => impair
                .expect("forwarder mode needs the forwarder")
                .set(fault),
            Mode::Netem => {
                let args = Self::netem_args(fault);
                let args: Vec<&str> = args.iter().map(String::as_str).collect();
                let mut host = vec!["qdisc", "change", "dev", &self.host_if, "root", "netem"];
                host.extend(&args);
                assert!(run(&self.tc, &host), "tc {host:?}");
                let mut inner = vec![
                    "netns",
                    "exec",
                    &self.ns,
                    &self.tc,
                    "qdisc",
                    "change",
                    "dev",
                    &self.ns_if,
                    "root",
                    "netem",
                ];
                inner.extend(&args);
                assert!(run(&self.ip, &inner), "ip {inner:?}");
            }
        }
    }

    /// Where clients should send to reach `relay` (in the namespace): the forwarder in
    /// forwarder mode, the relay itself with netem.
    pub async fn front(&self, relay: SocketAddr) -> (SocketAddr, Option<Impair>) {
        match self.mode {
            Mode::Netem => (relay, None),
            Mode::Forwarder => {
                let impair = Impair::start(relay, u64::from(unique()) + 7).await;
                (impair.addr, Some(impair))
            }
        }
    }
}

impl Drop for NetLab {
    fn drop(&mut self) {
        // Deleting the namespace deletes its end of the pair, and with it the other.
        let _ = run(&self.ip, &["netns", "del", &self.ns]);
        let _ = run(&self.ip, &["link", "del", &self.host_if]);
    }
}
