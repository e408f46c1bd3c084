//! The kernel's own handshake-related counters, from /proc/net/netstat, so
//! they sit beside ours on one dashboard: SYN cookies and listen-queue drops
//! are the kernel's side of what we see on the wire.
use std::fs;

/// (TcpExt field, our metric name, HELP).
pub const FIELDS: &[(&str, &str, &str)] = &[
    (
        "SyncookiesSent",
        "tcp_handshake_kernel_syncookies_sent_total",
        "SYN cookies sent (TcpExt SyncookiesSent): the SYN queue overflowed.",
    ),
    (
        "SyncookiesRecv",
        "tcp_handshake_kernel_syncookies_recv_total",
        "Valid SYN cookies received (TcpExt SyncookiesRecv).",
    ),
    (
        "SyncookiesFailed",
        "tcp_handshake_kernel_syncookies_failed_total",
        "Invalid SYN cookies received (TcpExt SyncookiesFailed).",
    ),
    (
        "ListenOverflows",
        "tcp_handshake_kernel_listen_overflows_total",
        "Completed handshakes dropped because the accept queue was full (TcpExt ListenOverflows).",
    ),
    (
        "ListenDrops",
        "tcp_handshake_kernel_listen_drops_total",
        "SYNs and final ACKs dropped by listeners for any reason (TcpExt ListenDrops).",
    ),
    (
        "TCPReqQFullDrop",
        "tcp_handshake_kernel_reqq_full_drop_total",
        "SYNs dropped because the SYN queue was full and cookies were off (TcpExt TCPReqQFullDrop).",
    ),
    (
        "TCPReqQFullDoCookies",
        "tcp_handshake_kernel_reqq_full_do_cookies_total",
        "SYN cookies sent because the SYN queue was full (TcpExt TCPReqQFullDoCookies).",
    ),
];

/// Values of [`FIELDS`] from a /proc/net/netstat text, in order; a field the
/// kernel does not have reads as None.
pub fn parse(text: &str) -> Vec<Option<u64>> {
    let mut lines = text.lines();
    let mut names: Vec<&str> = Vec::new();
    let mut values: Vec<&str> = Vec::new();
    while let (Some(header), Some(data)) = (lines.next(), lines.next()) {
        if header.starts_with("TcpExt:") && data.starts_with("TcpExt:") {
            names = header.split_whitespace().skip(1).collect();
            values = data.split_whitespace().skip(1).collect();
        }
    }
    FIELDS
        .iter()
        .map(|(field, _, _)| {
            names
                .iter()
                .position(|n| n == field)
                .and_then(|i| values.get(i)?.parse().ok())
        })
        .collect()
}

pub fn read() -> Vec<Option<u64>> {
    fs::read_to_string("/proc/net/netstat")
        .map(|t| parse(&t))
        .unwrap_or_else(|_| vec![None; FIELDS.len()])
}

/// The kernel's SyncookiesSent, 0 if it cannot be read.
pub fn syncookies_sent() -> u64 {
    read().first().copied().flatten().unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_tcpext_fields() {
        let text = "TcpExt: SyncookiesSent SyncookiesRecv ListenDrops\nTcpExt: 5 6 7\nIpExt: InNoRoutes\nIpExt: 1\n";
        let v = parse(text);
        assert_eq!(v[0], Some(5));
        assert_eq!(v[1], Some(6));
        assert_eq!(v[2], None, "SyncookiesFailed is absent");
        assert_eq!(v[4], Some(7));
    }
}
