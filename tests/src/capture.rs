//! Writing captures for the replay tests: classic pcap (Ethernet, raw IP,
//! Linux cooked SLL2) and pcapng with per-packet direction flags.
use std::{fs, path::Path};

/// Which way a packet went, for formats that record it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Way {
    In,
    Out,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// Classic pcap, Ethernet frames (no direction).
    PcapEthernet,
    /// Classic pcap, nanosecond timestamps, big-endian: the less common
    /// variants, to exercise the reader.
    PcapEthernetNanosBigEndian,
    /// Classic pcap, raw IP (no Ethernet header, no direction).
    PcapRawIp,
    /// Classic pcap, Linux cooked v2, with the packet type as direction.
    PcapSll2,
    /// pcapng, Ethernet, direction in each enhanced packet block's flags.
    PcapNg,
    /// pcapng whose first interface is of a link type replay does not read
    /// (USER0, 147), with one packet of its own; the rest as [`Format::PcapNg`].
    PcapNgForeignInterface,
    /// Classic pcap, BSD loopback: a little-endian address family, then IP.
    PcapNull,
    /// Classic pcap, OpenBSD loopback: the family in network order.
    PcapLoop,
    /// Classic pcap, Linux NFLOG: TLVs, the packet in the payload one.
    PcapNflog,
}

/// One packet: an Ethernet frame, its time in ns, and its way.
pub struct Record {
    pub ts_ns: u64,
    pub frame: Vec<u8>,
    pub way: Way,
}

fn pcap_header(out: &mut Vec<u8>, linktype: u32, nanos: bool, big: bool) {
    let magic: u32 = if nanos { 0xa1b2_3c4d } else { 0xa1b2_c3d4 };
    let w32 = |out: &mut Vec<u8>, v: u32| {
        out.extend_from_slice(&if big {
            v.to_be_bytes()
        } else {
            v.to_le_bytes()
        })
    };
    let w16 = |out: &mut Vec<u8>, v: u16| {
        out.extend_from_slice(&if big {
            v.to_be_bytes()
        } else {
            v.to_le_bytes()
        })
    };
    w32(out, magic);
    w16(out, 2);
    w16(out, 4);
    w32(out, 0);
    w32(out, 0);
    w32(out, 262_144);
    w32(out, linktype);
}

/// The bytes of a capture of `records` in `format`.
pub fn encode(format: Format, records: &[Record]) -> Vec<u8> {
    let mut out = Vec::new();
    match format {
        Format::PcapNg | Format::PcapNgForeignInterface => {
            let block = |out: &mut Vec<u8>, kind: u32, body: &[u8]| {
                let total = (12 + body.len().div_ceil(4) * 4) as u32;
                out.extend_from_slice(&kind.to_le_bytes());
                out.extend_from_slice(&total.to_le_bytes());
                out.extend_from_slice(body);
                out.resize(out.len() + (body.len().div_ceil(4) * 4 - body.len()), 0);
                out.extend_from_slice(&total.to_le_bytes());
            };
            let mut shb = Vec::new();
            shb.extend_from_slice(&0x1a2b_3c4du32.to_le_bytes());
            shb.extend_from_slice(&1u16.to_le_bytes());
            shb.extend_from_slice(&0u16.to_le_bytes());
            shb.extend_from_slice(&u64::MAX.to_le_bytes());
            block(&mut out, 0x0a0d_0d0a, &shb);
            let foreign = format == Format::PcapNgForeignInterface;
            if foreign {
                // An interface of a kind we do not read, and a packet on it.
                let mut idb = Vec::new();
                idb.extend_from_slice(&147u16.to_le_bytes());
                idb.extend_from_slice(&0u16.to_le_bytes());
                idb.extend_from_slice(&262_144u32.to_le_bytes());
                block(&mut out, 1, &idb);
                let mut epb = Vec::new();
                epb.extend_from_slice(&0u32.to_le_bytes());
                epb.extend_from_slice(&[0; 8]);
                epb.extend_from_slice(&8u32.to_le_bytes());
                epb.extend_from_slice(&8u32.to_le_bytes());
                epb.extend_from_slice(b"whatever");
                block(&mut out, 6, &epb);
            }
            // The Ethernet interface, if_tsresol = 9 (ns).
            let mut idb = Vec::new();
            idb.extend_from_slice(&1u16.to_le_bytes());
            idb.extend_from_slice(&0u16.to_le_bytes());
            idb.extend_from_slice(&262_144u32.to_le_bytes());
            idb.extend_from_slice(&9u16.to_le_bytes());
            idb.extend_from_slice(&1u16.to_le_bytes());
            idb.extend_from_slice(&[9, 0, 0, 0]);
            idb.extend_from_slice(&[0, 0, 0, 0]);
            block(&mut out, 1, &idb);
            for r in records {
                let mut epb = Vec::new();
                epb.extend_from_slice(&u32::from(foreign).to_le_bytes());
                epb.extend_from_slice(&((r.ts_ns >> 32) as u32).to_le_bytes());
                epb.extend_from_slice(&(r.ts_ns as u32).to_le_bytes());
                epb.extend_from_slice(&(r.frame.len() as u32).to_le_bytes());
                epb.extend_from_slice(&(r.frame.len() as u32).to_le_bytes());
                epb.extend_from_slice(&r.frame);
                epb.resize(epb.len().div_ceil(4) * 4, 0);
                // epb_flags: bits 0-1 = 1 inbound, 2 outbound.
                epb.extend_from_slice(&2u16.to_le_bytes());
                epb.extend_from_slice(&4u16.to_le_bytes());
                epb.extend_from_slice(&(if r.way == Way::In { 1u32 } else { 2 }).to_le_bytes());
                epb.extend_from_slice(&[0, 0, 0, 0]);
                block(&mut out, 6, &epb);
            }
        }
        _ => {
            let (linktype, nanos, big) = match format {
                Format::PcapEthernet => (1, false, false),
                Format::PcapEthernetNanosBigEndian => (1, true, true),
                Format::PcapRawIp => (101, false, false),
                Format::PcapNull => (0, false, false),
                Format::PcapLoop => (108, false, false),
                Format::PcapNflog => (239, false, false),
                _ => (276, false, false),
            };
            pcap_header(&mut out, linktype, nanos, big);
            for r in records {
                let data = match format {
                    Format::PcapRawIp => r.frame[14..].to_vec(),
                    Format::PcapNull | Format::PcapLoop => {
                        let family: u32 = if r.frame[12..14] == [0x86, 0xdd] {
                            24
                        } else {
                            2
                        };
                        let mut d = if format == Format::PcapNull {
                            family.to_le_bytes().to_vec()
                        } else {
                            family.to_be_bytes().to_vec()
                        };
                        d.extend_from_slice(&r.frame[14..]);
                        d
                    }
                    Format::PcapNflog => {
                        let ip = &r.frame[14..];
                        let family = if r.frame[12..14] == [0x86, 0xdd] {
                            10
                        } else {
                            2
                        };
                        let mut d = vec![family, 0, 0, 0];
                        // A prefix TLV ("hm", padded), then the payload.
                        d.extend_from_slice(&6u16.to_ne_bytes());
                        d.extend_from_slice(&10u16.to_ne_bytes());
                        d.extend_from_slice(&[b'h', b'm', 0, 0]);
                        d.extend_from_slice(&((4 + ip.len()) as u16).to_ne_bytes());
                        d.extend_from_slice(&9u16.to_ne_bytes());
                        d.extend_from_slice(ip);
                        d
                    }
                    Format::PcapSll2 => {
                        let mut d = Vec::new();
                        d.extend_from_slice(&r.frame[12..14]); // protocol
                        d.extend_from_slice(&[0, 0]);
                        d.extend_from_slice(&2u32.to_be_bytes()); // ifindex
                        d.extend_from_slice(&1u16.to_be_bytes()); // ARPHRD_ETHER
                        d.push(if r.way == Way::Out { 4 } else { 0 });
                        d.push(6);
                        d.extend_from_slice(&r.frame[6..12]);
                        d.extend_from_slice(&[0, 0]);
                        d.extend_from_slice(&r.frame[14..]);
                        d
                    }
                    _ => r.frame.clone(),
                };
                let (secs, frac) = (r.ts_ns / 1_000_000_000, r.ts_ns % 1_000_000_000);
                let frac = if nanos { frac } else { frac / 1000 };
                for v in [
                    secs as u32,
                    frac as u32,
                    data.len() as u32,
                    data.len() as u32,
                ] {
                    out.extend_from_slice(&if big {
                        v.to_be_bytes()
                    } else {
                        v.to_le_bytes()
                    });
                }
                out.extend_from_slice(&data);
            }
        }
    }
    out
}

/// How a capture file is compressed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    Gzip,
    Zstd,
}

/// `bytes` compressed.
pub fn compress(bytes: &[u8], how: Compression) -> Vec<u8> {
    match how {
        Compression::Gzip => {
            use std::io::Write as _;
            let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
            enc.write_all(bytes).expect("gzip");
            enc.finish().expect("gzip")
        }
        Compression::Zstd => {
            ruzstd::encoding::compress_to_vec(bytes, ruzstd::encoding::CompressionLevel::Fastest)
        }
    }
}

pub fn write(path: &Path, format: Format, records: &[Record]) {
    fs::write(path, encode(format, records)).expect("write capture");
}
