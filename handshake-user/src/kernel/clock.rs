//! The agent's clock: the kernel's, which the flow table's ages are on.

/// The kernel's CLOCK_MONOTONIC in ns: the clock `bpf_ktime_get_ns` reads,
/// which the flow table's ages are measured on. In a time namespace
/// (`unshare --time`) this process's CLOCK_MONOTONIC is offset from it; the
/// offset is taken back out, so ages stay right.
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid timespec to fill.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    let ns = i128::from(ts.tv_sec) * 1_000_000_000 + i128::from(ts.tv_nsec);
    u64::try_from(ns - i128::from(time_namespace_offset_ns())).unwrap_or(0)
}

/// This process's time namespace offset of CLOCK_MONOTONIC, in ns (0 outside
/// one, or where the kernel has no time namespaces).
fn time_namespace_offset_ns() -> i64 {
    static OFFSET: std::sync::OnceLock<i64> = std::sync::OnceLock::new();
    *OFFSET.get_or_init(|| {
        std::fs::read_to_string("/proc/self/timens_offsets")
            .ok()
            .and_then(|text| parse_timens_offset(&text))
            .unwrap_or(0)
    })
}

/// The monotonic line of /proc/PID/timens_offsets: `monotonic <s> <ns>`.
fn parse_timens_offset(text: &str) -> Option<i64> {
    let line = text.lines().find(|l| l.starts_with("monotonic"))?;
    let mut fields = line.split_whitespace().skip(1);
    let secs: i64 = fields.next()?.parse().ok()?;
    let nanos: i64 = fields.next()?.parse().ok()?;
    secs.checked_mul(1_000_000_000)?.checked_add(nanos)
}

#[cfg(test)]
mod clock_tests {
    use super::parse_timens_offset;

    #[test]
    fn time_namespace_offsets_are_read() {
        let text = "monotonic      100000         5\nboottime            0         0\n";
        assert_eq!(parse_timens_offset(text), Some(100_000_000_000_005));
        assert_eq!(
            parse_timens_offset("monotonic -20 0\nboottime 0 0\n"),
            Some(-20_000_000_000)
        );
        assert_eq!(parse_timens_offset("boottime 0 0\n"), None);
    }
}
