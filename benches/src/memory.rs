//! A process's memory as the kernel accounts it (`/proc/<pid>/status`).

use serde::Serialize;

/// Resident memory of one process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct MemoryUsage {
    /// The peak resident set size so far (`VmHWM`), in KiB.
    pub peak_kib: u64,
    /// The resident set size now (`VmRSS`), in KiB.
    pub resident_kib: u64,
}

impl MemoryUsage {
    /// The peak in MiB, for reports.
    pub fn peak_mib(&self) -> f64 {
        self.peak_kib as f64 / 1024.0
    }
}

/// The memory of process `pid`; `None` when it has exited or the fields are missing.
pub fn memory_of(pid: u32) -> Option<MemoryUsage> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    parse_status(&status)
}

fn parse_status(status: &str) -> Option<MemoryUsage> {
    let field = |name: &str| {
        status
            .lines()
            .find_map(|line| line.strip_prefix(name))
            .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
    };
    Some(MemoryUsage {
        peak_kib: field("VmHWM:")?,
        resident_kib: field("VmRSS:")?,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn reads_peak_and_resident_sizes() {
        let status = "Name:\tx\nVmPeak:\t  99 kB\nVmHWM:\t    2048 kB\nVmRSS:\t    1024 kB\n";
        assert_eq!(
            parse_status(status),
            Some(MemoryUsage {
                peak_kib: 2048,
                resident_kib: 1024
            })
        );
    }

    #[test]
    fn this_process_has_a_resident_set() {
        let usage = memory_of(std::process::id()).unwrap();
        assert!(usage.peak_kib >= usage.resident_kib && usage.resident_kib > 0);
    }
}
