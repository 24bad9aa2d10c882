//! CPU time and proportional memory of a process and its children, from /proc.

/// Linux reports CPU times in clock ticks of 1/100 s (USER_HZ) on every architecture we run on.
const TICKS_PER_SECOND: f64 = 100.0;

/// Fields of /proc/PID/stat after the command name: (ppid, utime, stime, cutime, cstime).
fn stat(pid: u32) -> Option<(u32, u64, u64, u64, u64)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &text[text.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let n = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok());
    Some((n(1)? as u32, n(11)?, n(12)?, n(13)?, n(14)?))
}

/// The live children of `pid`.
fn children(pid: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&child| stat(child).is_some_and(|s| s.0 == pid))
        .collect()
}

/// CPU seconds used by `pid`, by its children that ended (and were waited for), and by its
/// live children: what a process tree like Postfix's master and its daemons costs.
pub fn cpu_seconds(pid: u32) -> f64 {
    let Some((_, u, s, cu, cs)) = stat(pid) else {
        return 0.0;
    };
    let mut ticks = u + s + cu + cs;
    for child in children(pid) {
        if let Some((_, u, s, cu, cs)) = stat(child) {
            ticks += u + s + cu + cs;
        }
    }
    ticks as f64 / TICKS_PER_SECOND
}

/// Proportional set size of `pid` and its live children, in MiB.
pub fn pss_mib(pid: u32) -> f64 {
    let pss = |p: u32| -> u64 {
        std::fs::read_to_string(format!("/proc/{p}/smaps_rollup"))
            .ok()
            .and_then(|t| {
                t.lines()
                    .find(|l| l.starts_with("Pss:"))
                    .and_then(|l| l.split_whitespace().nth(1))
                    .and_then(|v| v.parse().ok())
            })
            .unwrap_or(0)
    };
    let kib: u64 = pss(pid) + children(pid).into_iter().map(pss).sum::<u64>();
    kib as f64 / 1024.0
}

/// Resident set size of `pid` alone (VmRSS), in MiB.
pub fn rss_mib(pid: u32) -> f64 {
    status_mib(pid, "VmRSS:")
}

/// Peak resident set size of `pid` alone (VmHWM), in MiB.
pub fn peak_mib(pid: u32) -> f64 {
    status_mib(pid, "VmHWM:")
}

/// A size field of /proc/PID/status (given in KiB), in MiB; 0 when unreadable.
fn status_mib(pid: u32, field: &str) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<u64>().ok())
        })
        .map_or(0.0, |kib| kib as f64 / 1024.0)
}
