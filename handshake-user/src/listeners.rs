//! The host's listening TCP ports, from /proc/net/tcp and tcp6: the ports
//! that get their own per-listener series when --listener-ports is not set.
use std::{collections::BTreeSet, fs};

/// Most ports discovered automatically; the rest are counted as "other".
/// (The kernel map holds up to `MAX_LISTENERS`; operators can name more.)
pub const MAX_DISCOVERED: usize = 256;

/// TCP_LISTEN in /proc/net/tcp's `st` column.
const LISTEN: &str = "0A";

/// Ports of the sockets in LISTEN state in `table` (a /proc/net/tcp file).
pub fn parse(table: &str) -> BTreeSet<u16> {
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let mut cols = line.split_whitespace();
            let local = cols.nth(1)?;
            let state = cols.nth(1)?;
            if state != LISTEN {
                return None;
            }
            u16::from_str_radix(local.rsplit(':').next()?, 16).ok()
        })
        .collect()
}

/// The listening ports of this network namespace, lowest first, at most
/// [`MAX_DISCOVERED`].
pub fn discover() -> Vec<u16> {
    let mut ports = BTreeSet::new();
    for file in ["/proc/net/tcp", "/proc/net/tcp6"] {
        if let Ok(text) = fs::read_to_string(file) {
            ports.extend(parse(&text));
        }
    }
    ports
        .into_iter()
        .filter(|p| *p != 0)
        .take(MAX_DISCOVERED)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listening_sockets_only() {
        let table = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n   0: 0100007F:24E5 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1\n   1: 0100007F:24E5 0100007F:A1B2 01 00000000:00000000 00:00000000 00000000     0        0 2 1\n   2: 00000000:0016 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 3 1\n";
        assert_eq!(parse(table).into_iter().collect::<Vec<_>>(), vec![22, 9445]);
    }
}
