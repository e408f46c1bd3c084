//! Where half-open handshakes come from, for the detector's log line: how
//! many distinct source prefixes (/24 for IPv4, /64 for IPv6), the largest,
//! and the share they hold. A flood spread thin over many prefixes is
//! rolled up (/16, /32) so that the line still says where it comes from.
//! Never a label: the line is the only place addresses appear.
use std::{
    collections::HashMap,
    net::{Ipv4Addr, Ipv6Addr},
};

use handshake_common::{counters::Family, flow::FlowKey};

/// Prefixes counted at most, at each length: past it, the count is a floor
/// and the memory a scan takes stays bounded whatever the table holds.
pub const MAX_PREFIXES: usize = 65_536;
/// Prefixes listed in the line.
pub const TOP: usize = 5;
/// Roll up when the top prefixes hold less than this share.
const ROLL_UP_BELOW: f64 = 0.5;

/// A source prefix as a compact key: family, prefix length and masked bytes.
type Prefix = (u8, u8, [u8; 16]);

fn prefix_of(key: &FlowKey, coarse: bool) -> Prefix {
    let mut bytes = [0u8; 16];
    for (i, w) in key.src_addr.iter().enumerate() {
        bytes[i * 4..i * 4 + 4].copy_from_slice(&w.to_ne_bytes());
    }
    let v6 = key.family == Family::Ipv6 as u8;
    let len: u8 = match (v6, coarse) {
        (false, false) => 24,
        (false, true) => 16,
        (true, false) => 64,
        (true, true) => 32,
    };
    bytes[usize::from(len / 8)..].fill(0);
    (key.family, len, bytes)
}

fn prefix_text((family, len, b): Prefix) -> String {
    if family == Family::Ipv6 as u8 {
        format!("{}/{len}", Ipv6Addr::from(b))
    } else {
        format!("{}/{len}", Ipv4Addr::new(b[0], b[1], b[2], b[3]))
    }
}

#[derive(Debug, Default)]
struct Counts {
    by_prefix: HashMap<Prefix, u64>,
    /// Entries whose prefix was new once [`MAX_PREFIXES`] were counted.
    overflow: u64,
}

impl Counts {
    fn add(&mut self, p: Prefix) {
        if let Some(n) = self.by_prefix.get_mut(&p) {
            *n += 1;
        } else if self.by_prefix.len() < MAX_PREFIXES {
            self.by_prefix.insert(p, 1);
        } else {
            self.overflow += 1;
        }
    }

    fn top(&self) -> Vec<(Prefix, u64)> {
        let mut v: Vec<(Prefix, u64)> = self.by_prefix.iter().map(|(p, n)| (*p, *n)).collect();
        v.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        v.truncate(TOP);
        v
    }
}

/// Counts sources as the scan streams entries in.
#[derive(Debug, Default)]
pub struct SourceCounter {
    fine: Counts,
    coarse: Counts,
    total: u64,
}

impl SourceCounter {
    pub fn add(&mut self, key: &FlowKey) {
        self.total += 1;
        self.fine.add(prefix_of(key, false));
        self.coarse.add(prefix_of(key, true));
    }

    pub fn finish(self) -> SourceSummary {
        let share = |top: &[(Prefix, u64)]| {
            if self.total == 0 {
                0.0
            } else {
                top.iter().map(|(_, n)| *n).sum::<u64>() as f64 / self.total as f64
            }
        };
        let fine_top = self.fine.top();
        let rolled_up = self.fine.by_prefix.len() > TOP && share(&fine_top) < ROLL_UP_BELOW;
        let top = if rolled_up {
            self.coarse.top()
        } else {
            fine_top
        };
        SourceSummary {
            total: self.total,
            distinct: self.fine.by_prefix.len(),
            distinct_floor: self.fine.overflow > 0,
            rolled_up_distinct: rolled_up.then_some(self.coarse.by_prefix.len()),
            top_share: share(&top),
            top: top.into_iter().map(|(p, n)| (prefix_text(p), n)).collect(),
        }
    }
}

/// What the line says of the sources.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SourceSummary {
    /// Entries counted.
    pub total: u64,
    /// Distinct /24 (IPv4) and /64 (IPv6) prefixes.
    pub distinct: usize,
    /// More prefixes than [`MAX_PREFIXES`]: `distinct` is a floor.
    pub distinct_floor: bool,
    /// Distinct /16 and /32 prefixes, when the top ones were rolled up.
    pub rolled_up_distinct: Option<usize>,
    /// The largest prefixes (at the rolled-up length, if rolled up).
    pub top: Vec<(String, u64)>,
    /// Share of `total` that `top` holds.
    pub top_share: f64,
}

impl SourceSummary {
    /// logfmt fields: `source_prefixes=N [source_prefixes_rolled_up=M]
    /// top_sources_share=S top_sources=p:n,...`.
    pub fn fields(&self) -> String {
        if self.total == 0 {
            return "source_prefixes=0 top_sources=-".to_owned();
        }
        let plus = if self.distinct_floor { "+" } else { "" };
        let mut out = format!("source_prefixes={}{plus}", self.distinct);
        if let Some(m) = self.rolled_up_distinct {
            out.push_str(&format!(" source_prefixes_rolled_up={m}"));
        }
        let top: Vec<String> = self.top.iter().map(|(p, n)| format!("{p}:{n}")).collect();
        out.push_str(&format!(
            " top_sources_share={:.3} top_sources={}",
            self.top_share,
            top.join(",")
        ));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v4(a: [u8; 4]) -> FlowKey {
        FlowKey::new([u32::from_ne_bytes(a), 0, 0, 0], [1, 0, 0, 0], 5, 80, 0)
    }

    #[test]
    fn concentrated_sources_are_listed_by_slash_24() {
        let mut c = SourceCounter::default();
        for i in 0..12 {
            c.add(&v4([198, 18, 0, i]));
        }
        c.add(&v4([10, 1, 2, 3]));
        let s = c.finish();
        assert_eq!(s.distinct, 2);
        assert_eq!(s.rolled_up_distinct, None);
        assert_eq!(
            s.top,
            vec![
                ("198.18.0.0/24".to_owned(), 12),
                ("10.1.2.0/24".to_owned(), 1)
            ]
        );
        assert_eq!(
            s.fields(),
            "source_prefixes=2 top_sources_share=1.000 top_sources=198.18.0.0/24:12,10.1.2.0/24:1"
        );
    }

    #[test]
    fn a_spread_flood_is_rolled_up_with_its_count_of_prefixes() {
        let mut c = SourceCounter::default();
        // 512 /24s in two /16s, 4 entries each.
        for third in 0..=255u8 {
            for b in [18u8, 19] {
                for last in 0..4 {
                    c.add(&v4([198, b, third, last]));
                }
            }
        }
        let s = c.finish();
        assert_eq!(s.total, 2048);
        assert_eq!(s.distinct, 512);
        assert_eq!(s.rolled_up_distinct, Some(2));
        assert_eq!(
            s.top,
            vec![
                ("198.18.0.0/16".to_owned(), 1024),
                ("198.19.0.0/16".to_owned(), 1024)
            ]
        );
        assert!((s.top_share - 1.0).abs() < 1e-9);
        assert!(
            s.fields()
                .starts_with("source_prefixes=512 source_prefixes_rolled_up=2 ")
        );
    }

    #[test]
    fn ipv6_prefixes_are_64_and_32() {
        let mut c = SourceCounter::default();
        for i in 0..12u8 {
            // 2001:db8:0:i::1
            let key = FlowKey::new(
                [
                    u32::from_ne_bytes([0x20, 0x01, 0x0d, 0xb8]),
                    u32::from_ne_bytes([0, 0, 0, i]),
                    0,
                    u32::from_ne_bytes([0, 0, 0, 1]),
                ],
                [1, 0, 0, 0],
                5,
                80,
                Family::Ipv6 as u8,
            );
            c.add(&key);
        }
        let s = c.finish();
        assert_eq!(s.distinct, 12);
        assert_eq!(s.rolled_up_distinct, Some(1));
        assert_eq!(s.top, vec![("2001:db8::/32".to_owned(), 12)]);
    }

    #[test]
    fn prefixes_past_the_cap_are_a_floor() {
        let mut c = SourceCounter::default();
        for i in 0..(MAX_PREFIXES as u32 + 10) {
            let b = (i << 8).to_be_bytes();
            c.add(&v4([b[0], b[1], b[2], 1]));
        }
        let s = c.finish();
        assert_eq!(s.distinct, MAX_PREFIXES);
        assert!(s.distinct_floor);
        assert!(
            s.fields()
                .starts_with(&format!("source_prefixes={MAX_PREFIXES}+"))
        );
    }
}
