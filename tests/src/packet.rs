//! A builder for the frames the table-driven tests feed to the real
//! programs: Ethernet, up to any number of VLAN tags, IPv4 (with options and
//! fragment fields) or IPv6 (with extension headers), TCP (with options and
//! payload). Checksums are filled in, so the frames are also valid on a wire.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

pub const FIN: u8 = 0x01;
pub const SYN: u8 = 0x02;
pub const RST: u8 = 0x04;
pub const PSH: u8 = 0x08;
pub const ACK: u8 = 0x10;

/// An IPv6 extension header to put between the fixed header and TCP.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Ext {
    /// Hop-by-hop options, `len` 8-byte units beyond the first 8.
    HopByHop(u8),
    /// Routing header (type 0 body, never processed by us).
    Routing(u8),
    DestOpts(u8),
    /// Fragment header with this offset (in 8-byte units) and M flag.
    Fragment {
        offset: u16,
        more: bool,
    },
    /// Any other next-header value with an 8-byte body (e.g. 50, ESP).
    Other(u8),
}

impl Ext {
    fn next_header(&self) -> u8 {
        match self {
            Self::HopByHop(_) => 0,
            Self::Routing(_) => 43,
            Self::DestOpts(_) => 60,
            Self::Fragment { .. } => 44,
            Self::Other(n) => *n,
        }
    }
}

#[derive(Clone, Debug)]
pub struct Packet {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub sport: u16,
    pub dport: u16,
    pub seq: u32,
    pub ack: u32,
    pub flags: u8,
    pub payload: Vec<u8>,
    /// TPIDs and VLAN ids, outermost first.
    pub vlans: Vec<(u16, u16)>,
    pub ipv4_options: Vec<u8>,
    /// IPv4 fragment offset (8-byte units) and MF flag.
    pub ipv4_fragment: (u16, bool),
    pub ipv6_ext: Vec<Ext>,
    /// TCP options bytes (padded to 4 by the builder).
    pub tcp_options: Vec<u8>,
    /// Overrides the TCP data offset (in 32-bit words), to build bad ones.
    pub data_offset: Option<u8>,
}

impl Packet {
    pub fn tcp(src: IpAddr, sport: u16, dst: IpAddr, dport: u16) -> Self {
        Self {
            src,
            dst,
            sport,
            dport,
            seq: 0,
            ack: 0,
            flags: 0,
            payload: Vec::new(),
            vlans: Vec::new(),
            ipv4_options: Vec::new(),
            ipv4_fragment: (0, false),
            ipv6_ext: Vec::new(),
            tcp_options: Vec::new(),
            data_offset: None,
        }
    }

    #[must_use]
    pub fn flags(mut self, flags: u8) -> Self {
        self.flags = flags;
        self
    }

    #[must_use]
    pub fn seq(mut self, seq: u32) -> Self {
        self.seq = seq;
        self
    }

    #[must_use]
    pub fn ack(mut self, ack: u32) -> Self {
        self.ack = ack;
        self
    }

    #[must_use]
    pub fn payload(mut self, len: usize) -> Self {
        self.payload = (0..len).map(|i| i as u8).collect();
        self
    }

    #[must_use]
    pub fn vlan(mut self, id: u16) -> Self {
        self.vlans.push((0x8100, id));
        self
    }

    /// 802.1ad outer tag, 802.1Q inner tag.
    #[must_use]
    pub fn qinq(mut self, outer: u16, inner: u16) -> Self {
        self.vlans.push((0x88a8, outer));
        self.vlans.push((0x8100, inner));
        self
    }

    #[must_use]
    pub fn ipv4_options(mut self, len: usize) -> Self {
        // NOPs, then padded to a multiple of 4 by the builder.
        self.ipv4_options = vec![1; len];
        self
    }

    #[must_use]
    pub fn fragment(mut self, offset: u16, more: bool) -> Self {
        self.ipv4_fragment = (offset, more);
        self
    }

    #[must_use]
    pub fn ext(mut self, ext: Ext) -> Self {
        self.ipv6_ext.push(ext);
        self
    }

    #[must_use]
    pub fn tcp_options(mut self, bytes: &[u8]) -> Self {
        self.tcp_options = bytes.to_vec();
        self
    }

    #[must_use]
    pub fn data_offset(mut self, words: u8) -> Self {
        self.data_offset = Some(words);
        self
    }

    /// The reply direction: addresses and ports swapped, nothing else kept.
    #[must_use]
    pub fn reply(&self) -> Self {
        let mut r = Self::tcp(self.dst, self.dport, self.src, self.sport);
        r.vlans = self.vlans.clone();
        r
    }

    /// The TCP segment, its checksum over the pseudo header of `src`/`dst`
    /// (4 or 16 bytes each).
    fn tcp_segment(&self, src: &[u8], dst: &[u8]) -> Vec<u8> {
        let mut options = self.tcp_options.clone();
        while !options.len().is_multiple_of(4) {
            options.push(0);
        }
        let doff = self.data_offset.unwrap_or((5 + options.len() / 4) as u8);
        let mut t = Vec::with_capacity(20 + options.len() + self.payload.len());
        t.extend_from_slice(&self.sport.to_be_bytes());
        t.extend_from_slice(&self.dport.to_be_bytes());
        t.extend_from_slice(&self.seq.to_be_bytes());
        t.extend_from_slice(&self.ack.to_be_bytes());
        t.push(doff << 4);
        t.push(self.flags);
        t.extend_from_slice(&64240u16.to_be_bytes());
        t.extend_from_slice(&[0, 0, 0, 0]); // checksum, urgent pointer
        t.extend_from_slice(&options);
        t.extend_from_slice(&self.payload);
        let mut pseudo = [src, dst].concat();
        if src.len() == 4 {
            pseudo.extend_from_slice(&[0, 6]);
            pseudo.extend_from_slice(&(t.len() as u16).to_be_bytes());
        } else {
            pseudo.extend_from_slice(&(t.len() as u32).to_be_bytes());
            pseudo.extend_from_slice(&[0, 0, 0, 6]);
        }
        let csum = checksum(&[&pseudo, &t]);
        t[16..18].copy_from_slice(&csum.to_be_bytes());
        t
    }

    /// The whole frame, Ethernet header included.
    pub fn build(&self) -> Vec<u8> {
        let mut frame = vec![0x02, 0, 0, 0, 0, 0x02, 0x02, 0, 0, 0, 0, 0x01];
        for (tpid, id) in &self.vlans {
            frame.extend_from_slice(&tpid.to_be_bytes());
            frame.extend_from_slice(&id.to_be_bytes());
        }
        frame.extend_from_slice(&self.ip_packet(true));
        frame
    }

    /// The IP packet alone (for raw-IP captures), with its ethertype first
    /// when `with_ethertype`.
    pub fn ip_packet(&self, with_ethertype: bool) -> Vec<u8> {
        let mut out = Vec::new();
        match (self.src, self.dst) {
            (IpAddr::V4(s), IpAddr::V4(d)) => {
                if with_ethertype {
                    out.extend_from_slice(&0x0800u16.to_be_bytes());
                }
                out.extend_from_slice(&self.ipv4(s, d));
            }
            (IpAddr::V6(s), IpAddr::V6(d)) => {
                if with_ethertype {
                    out.extend_from_slice(&0x86ddu16.to_be_bytes());
                }
                out.extend_from_slice(&self.ipv6(s, d));
            }
            _ => panic!("mixed address families"),
        }
        out
    }

    fn ipv4(&self, s: Ipv4Addr, d: Ipv4Addr) -> Vec<u8> {
        let tcp = self.tcp_segment(&s.octets(), &d.octets());
        let mut options = self.ipv4_options.clone();
        while !options.len().is_multiple_of(4) {
            options.push(0);
        }
        let ihl = 5 + options.len() / 4;
        let total = ihl * 4 + tcp.len();
        let (offset, more) = self.ipv4_fragment;
        let frag = offset & 0x1fff | if more { 0x2000 } else { 0 };
        let mut h = vec![0x40 | ihl as u8, 0];
        h.extend_from_slice(&(total as u16).to_be_bytes());
        h.extend_from_slice(&[0x12, 0x34]);
        h.extend_from_slice(&frag.to_be_bytes());
        h.extend_from_slice(&[64, 6, 0, 0]);
        h.extend_from_slice(&s.octets());
        h.extend_from_slice(&d.octets());
        h.extend_from_slice(&options);
        let csum = checksum(&[&h]);
        h[10..12].copy_from_slice(&csum.to_be_bytes());
        h.extend_from_slice(&tcp);
        h
    }

    fn ipv6(&self, s: Ipv6Addr, d: Ipv6Addr) -> Vec<u8> {
        let tcp = self.tcp_segment(&s.octets(), &d.octets());
        let mut ext = Vec::new();
        let first = self.ipv6_ext.first().map_or(6, Ext::next_header);
        for (i, e) in self.ipv6_ext.iter().enumerate() {
            let next = self.ipv6_ext.get(i + 1).map_or(6, Ext::next_header);
            match e {
                Ext::HopByHop(len) | Ext::Routing(len) | Ext::DestOpts(len) => {
                    ext.push(next);
                    ext.push(*len);
                    // PadN option filling the rest of the header.
                    let body = 6 + usize::from(*len) * 8;
                    ext.push(1);
                    ext.push((body - 2) as u8);
                    ext.extend(std::iter::repeat_n(0, body - 2));
                }
                Ext::Fragment { offset, more } => {
                    ext.push(next);
                    ext.push(0);
                    let v = (offset << 3) | u16::from(*more);
                    ext.extend_from_slice(&v.to_be_bytes());
                    ext.extend_from_slice(&[0, 0, 0, 1]);
                }
                Ext::Other(_) => {
                    ext.push(next);
                    ext.extend_from_slice(&[0; 7]);
                }
            }
        }
        let mut h = vec![0x60, 0, 0, 0];
        h.extend_from_slice(&((ext.len() + tcp.len()) as u16).to_be_bytes());
        h.push(first);
        h.push(64);
        h.extend_from_slice(&s.octets());
        h.extend_from_slice(&d.octets());
        h.extend_from_slice(&ext);
        h.extend_from_slice(&tcp);
        h
    }
}

/// The Internet checksum over the concatenation of `parts`.
pub fn checksum(parts: &[&[u8]]) -> u16 {
    let bytes: Vec<u8> = parts.concat();
    let mut sum: u32 = 0;
    for chunk in bytes.chunks(2) {
        let word = u16::from_be_bytes([chunk[0], *chunk.get(1).unwrap_or(&0)]);
        sum = sum.wrapping_add(u32::from(word));
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}
