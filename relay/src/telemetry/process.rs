//! The standard `process_*` figures and the host's UDP buffer errors, read from
//! `/proc` at scrape time. Anything unreadable (another OS, a hardened `/proc`) is
//! left out of the scrape rather than reported as zero.

use std::fmt::Write as _;

/// Clock ticks per second of `/proc/<pid>/stat` times. Linux reports them in
/// `USER_HZ`, which is 100 on every architecture the relay targets.
const CLOCK_TICKS: f64 = 100.0;

/// What `/proc` says about this process.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ProcessFigures {
    /// User plus system CPU time, seconds.
    pub cpu_seconds: Option<f64>,
    /// Resident set size, bytes.
    pub resident_bytes: Option<u64>,
    /// Virtual memory size, bytes.
    pub virtual_bytes: Option<u64>,
    /// Open file descriptors.
    pub open_fds: Option<u64>,
    /// The soft limit on open file descriptors.
    pub max_fds: Option<u64>,
    /// Start time, seconds since the Unix epoch.
    pub start_time_seconds: Option<f64>,
}

/// The host's (network namespace's) UDP buffer error counters, IPv4 and IPv6 summed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UdpErrors {
    /// Datagrams dropped because a socket's receive buffer was full.
    pub receive_buffer: u64,
    /// Datagrams dropped because a socket's send buffer was full.
    pub send_buffer: u64,
}

/// Reads this process's figures.
pub fn process_figures() -> ProcessFigures {
    let mut f = ProcessFigures::default();
    if let Ok(stat) = std::fs::read_to_string("/proc/self/stat") {
        // Fields after the command name, which is in parentheses and may hold spaces.
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .map(|(_, rest)| rest.split_whitespace().collect())
            .unwrap_or_default();
        // `fields[0]` is field 3 (state) of proc(5).
        let field = |n: usize| fields.get(n - 3).and_then(|v| v.parse::<u64>().ok());
        if let (Some(utime), Some(stime)) = (field(14), field(15)) {
            f.cpu_seconds = Some((utime + stime) as f64 / CLOCK_TICKS);
        }
        f.virtual_bytes = field(23);
        if let (Some(start), Some(boot)) = (field(22), boot_time()) {
            f.start_time_seconds = Some(boot as f64 + start as f64 / CLOCK_TICKS);
        }
    }
    if let Ok(status) = std::fs::read_to_string("/proc/self/status") {
        f.resident_bytes = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .map(|kb| kb * 1024);
    }
    if let Ok(dir) = std::fs::read_dir("/proc/self/fd") {
        f.open_fds = Some(dir.count() as u64);
    }
    if let Ok(limits) = std::fs::read_to_string("/proc/self/limits") {
        f.max_fds = limits
            .lines()
            .find_map(|l| l.strip_prefix("Max open files"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok());
    }
    f
}

fn boot_time() -> Option<u64> {
    std::fs::read_to_string("/proc/stat")
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("btime "))
        .and_then(|v| v.trim().parse().ok())
}

/// Reads `RcvbufErrors` and `SndbufErrors` from `/proc/net/snmp` (and `snmp6`).
pub fn udp_errors() -> Option<UdpErrors> {
    let snmp = std::fs::read_to_string("/proc/net/snmp").ok()?;
    let mut e = parse_snmp_udp(&snmp)?;
    if let Ok(snmp6) = std::fs::read_to_string("/proc/net/snmp6") {
        for line in snmp6.lines() {
            let mut parts = line.split_whitespace();
            let (Some(name), Some(value)) = (parts.next(), parts.next()) else {
                continue;
            };
            let value = value.parse::<u64>().unwrap_or(0);
            match name {
                "Udp6RcvbufErrors" => e.receive_buffer += value,
                "Udp6SndbufErrors" => e.send_buffer += value,
                _ => {}
            }
        }
    }
    Some(e)
}

/// Finds the `Udp:` header and value lines of `/proc/net/snmp`.
fn parse_snmp_udp(snmp: &str) -> Option<UdpErrors> {
    let mut udp = snmp.lines().filter(|l| l.starts_with("Udp: "));
    let names: Vec<&str> = udp.next()?.split_whitespace().collect();
    let values: Vec<&str> = udp.next()?.split_whitespace().collect();
    let get = |name: &str| {
        names
            .iter()
            .position(|n| *n == name)
            .and_then(|i| values.get(i))
            .and_then(|v| v.parse().ok())
    };
    Some(UdpErrors {
        receive_buffer: get("RcvbufErrors")?,
        send_buffer: get("SndbufErrors")?,
    })
}

/// Appends the `process_*` families that could be read.
pub fn render(out: &mut String, f: &ProcessFigures) {
    let mut family = |name: &str, kind: &str, help: &str, value: Option<String>| {
        if let Some(v) = value {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}"
            );
        }
    };
    family(
        "process_cpu_seconds_total",
        "counter",
        "Total user and system CPU time spent in seconds.",
        f.cpu_seconds.map(|v| v.to_string()),
    );
    family(
        "process_resident_memory_bytes",
        "gauge",
        "Resident memory size in bytes.",
        f.resident_bytes.map(|v| v.to_string()),
    );
    family(
        "process_virtual_memory_bytes",
        "gauge",
        "Virtual memory size in bytes.",
        f.virtual_bytes.map(|v| v.to_string()),
    );
    family(
        "process_open_fds",
        "gauge",
        "Number of open file descriptors.",
        f.open_fds.map(|v| v.to_string()),
    );
    family(
        "process_max_fds",
        "gauge",
        "Maximum number of open file descriptors.",
        f.max_fds.map(|v| v.to_string()),
    );
    family(
        "process_start_time_seconds",
        "gauge",
        "Start time of the process since unix epoch in seconds.",
        f.start_time_seconds.map(|v| v.to_string()),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snmp_udp_counters_are_found_by_name() {
        let snmp = "Ip: Forwarding DefaultTTL\nIp: 1 64\n\
            Udp: InDatagrams NoPorts InErrors OutDatagrams RcvbufErrors SndbufErrors InCsumErrors\n\
            Udp: 100 2 7 90 5 1 0\n\
            UdpLite: InDatagrams NoPorts InErrors OutDatagrams RcvbufErrors SndbufErrors\n\
            UdpLite: 0 0 0 0 0 0\n";
        assert_eq!(
            parse_snmp_udp(snmp),
            Some(UdpErrors {
                receive_buffer: 5,
                send_buffer: 1
            })
        );
        assert_eq!(parse_snmp_udp("Ip: 1\n"), None);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn this_process_is_readable_on_linux() {
        let f = process_figures();
        assert!(f.resident_bytes.is_some_and(|b| b > 0), "{f:?}");
        assert!(f.open_fds.is_some_and(|n| n > 0), "{f:?}");
        assert!(f.cpu_seconds.is_some(), "{f:?}");
        assert!(f.start_time_seconds.is_some_and(|t| t > 1.0e9), "{f:?}");
        let mut out = String::new();
        render(&mut out, &f);
        assert!(
            out.contains("# TYPE process_cpu_seconds_total counter\n"),
            "{out}"
        );
    }
}
