//! CPU time and resident memory of a process, from `/proc/PID/stat` and `/proc/PID/status`.

use anyhow::Context;

/// A process to sample, and the kernel's clock tick rate for `/proc/PID/stat`.
#[derive(Debug, Clone, Copy)]
pub struct Proc {
    /// The process ID (`None` for this process).
    pub pid: Option<u32>,
    /// `getconf CLK_TCK`, usually 100.
    pub clk_tck: u64,
}

/// One sample: CPU time used so far and resident memory now.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    /// User + system CPU time in microseconds: from the per-thread nanosecond run
    /// times in `/proc/PID/task/*/schedstat` when readable, else `/proc/PID/stat`.
    pub cpu_us: u64,
    /// User + system CPU time from `/proc/PID/stat` (clock-tick resolution).
    pub stat_cpu_us: u64,
    /// Time the process's threads spent runnable but waiting for a CPU (schedstat field
    /// 2), in microseconds: high when other processes share the pinned core.
    pub wait_us: u64,
    /// Resident set size in KiB.
    pub rss_kib: u64,
    /// When the sample was taken.
    pub at: std::time::Instant,
}

impl Proc {
    fn path(&self, file: &str) -> String {
        match self.pid {
            Some(pid) => format!("/proc/{pid}/{file}"),
            None => format!("/proc/self/{file}"),
        }
    }

    /// Reads CPU time and RSS now.
    pub fn sample(&self) -> anyhow::Result<Sample> {
        let at = std::time::Instant::now();
        let stat = std::fs::read_to_string(self.path("stat"))
            .with_context(|| format!("reading {}", self.path("stat")))?;
        // Fields after the command name (which may hold spaces) start at field 3 (state);
        // utime and stime are fields 14 and 15.
        let rest = stat
            .rsplit_once(')')
            .map(|(_, r)| r)
            .context("malformed stat")?;
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let ticks = |i: usize| -> anyhow::Result<u64> {
            Ok(fields.get(i).context("short stat")?.parse::<u64>()?)
        };
        let total_ticks = ticks(11)? + ticks(12)?;
        let stat_cpu_us = total_ticks * 1_000_000 / self.clk_tck.max(1);
        let (cpu_us, wait_us) = self.schedstat_us().unwrap_or((stat_cpu_us, 0));
        let status = std::fs::read_to_string(self.path("status"))?;
        let rss_kib = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        Ok(Sample {
            cpu_us,
            stat_cpu_us,
            wait_us,
            rss_kib,
            at,
        })
    }
}

impl Proc {
    /// Sum over the process's threads of their time on a CPU, in microseconds
    /// (`/proc/PID/task/TID/schedstat`, first field, nanoseconds). Threads that exited
    /// are not counted, so this is only used between two samples of a steady process.
    /// Also returns the summed run-queue wait (second field).
    fn schedstat_us(&self) -> Option<(u64, u64)> {
        let (mut run_ns, mut wait_ns) = (0u64, 0u64);
        for entry in std::fs::read_dir(self.path("task")).ok()? {
            let path = entry.ok()?.path().join("schedstat");
            let text = std::fs::read_to_string(path).ok()?;
            let mut fields = text.split_whitespace();
            run_ns += fields.next()?.parse::<u64>().ok()?;
            wait_ns += fields.next()?.parse::<u64>().ok()?;
        }
        Some((run_ns / 1_000, wait_ns / 1_000))
    }
}

/// CPU used between two samples: microseconds and percent of one core.
pub fn cpu_between(a: &Sample, b: &Sample) -> (u64, f64) {
    let cpu = b.cpu_us.saturating_sub(a.cpu_us);
    let wall = b.at.duration_since(a.at).as_micros().max(1) as f64;
    (cpu, 100.0 * cpu as f64 / wall)
}

/// Like [`cpu_between`] from `/proc/PID/stat` only, as a cross-check.
pub fn stat_cpu_between(a: &Sample, b: &Sample) -> (u64, f64) {
    let cpu = b.stat_cpu_us.saturating_sub(a.stat_cpu_us);
    let wall = b.at.duration_since(a.at).as_micros().max(1) as f64;
    (cpu, 100.0 * cpu as f64 / wall)
}

/// Percent of the wall time between two samples that the process's threads spent
/// runnable but waiting for a CPU.
pub fn wait_pct(a: &Sample, b: &Sample) -> f64 {
    let wait = b.wait_us.saturating_sub(a.wait_us);
    let wall = b.at.duration_since(a.at).as_micros().max(1) as f64;
    100.0 * wait as f64 / wall
}

/// Datagrams the kernel dropped because a UDP socket's receive buffer was full, host
/// wide (`RcvbufErrors` in `/proc/net/snmp`); 0 if unreadable.
pub fn udp_rcvbuf_errors() -> u64 {
    let Ok(text) = std::fs::read_to_string("/proc/net/snmp") else {
        return 0;
    };
    let mut udp = text.lines().filter(|l| l.starts_with("Udp:"));
    let (Some(names), Some(values)) = (udp.next(), udp.next()) else {
        return 0;
    };
    names
        .split_whitespace()
        .zip(values.split_whitespace())
        .find(|(n, _)| *n == "RcvbufErrors")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0)
}
