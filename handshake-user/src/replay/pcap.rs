//! Reading captures: classic pcap (either byte order, µs or ns) and pcapng
//! (section, interface, enhanced and simple packet blocks), plain or
//! compressed (gzip, zstd), with Ethernet, Linux cooked (SLL, SLL2), raw IP,
//! BSD loopback (NULL, LOOP) and Linux NFLOG link types. Frames come out as
//! Ethernet frames, the only shape the programs read, with the capture's
//! direction where it records one. In pcapng the link type is judged per
//! packet: an interface of another type only has its own packets skipped.
use std::{
    fs::File,
    io::{self, BufReader, Read},
    path::Path,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
};

/// Link types we can turn into Ethernet frames, and the others.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LinkType {
    Ethernet,
    LinuxSll,
    LinuxSll2,
    /// Raw IPv4 or IPv6 (LINKTYPE_RAW, DLT_RAW, LINKTYPE_IPV4/IPV6).
    RawIp,
    /// BSD loopback: a 4-byte address family, in the writer's byte order
    /// (NULL, 0) or in network order (LOOP, 108), then IP.
    Loopback,
    /// Linux NFLOG (239): TLVs, the packet in the payload one.
    Nflog,
    /// Cisco HDLC (104): address, control, then an Ethernet type.
    CiscoHdlc,
    /// PPP (9) and PPP in HDLC framing (50): an optional address and
    /// control (ff 03), then a PPP protocol number.
    Ppp,
    /// IP over InfiniBand (242): an Ethernet type and two reserved bytes.
    IpOverInfiniband,
    /// A link type we do not read; its packets are skipped and counted.
    Other(u32),
}

impl LinkType {
    pub fn from_code(code: u32) -> Self {
        match code {
            1 => Self::Ethernet,
            113 => Self::LinuxSll,
            276 => Self::LinuxSll2,
            12 | 14 | 101 | 228 | 229 => Self::RawIp,
            0 | 108 => Self::Loopback,
            239 => Self::Nflog,
            104 => Self::CiscoHdlc,
            9 | 50 => Self::Ppp,
            242 => Self::IpOverInfiniband,
            other => Self::Other(other),
        }
    }

    pub const fn name(self) -> &'static str {
        match self {
            Self::Ethernet => "ethernet",
            Self::LinuxSll => "linux_sll",
            Self::LinuxSll2 => "linux_sll2",
            Self::RawIp => "raw_ip",
            Self::Loopback => "bsd_loopback",
            Self::Nflog => "nflog",
            Self::CiscoHdlc => "cisco_hdlc",
            Self::Ppp => "ppp",
            Self::IpOverInfiniband => "ip_over_infiniband",
            Self::Other(_) => "other",
        }
    }
}

/// Which way a captured packet went, where the capture says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Way {
    Incoming,
    Outgoing,
}

/// One captured packet, as an Ethernet frame.
#[derive(Clone, Debug)]
pub struct Packet {
    pub ts_ns: u64,
    pub frame: Vec<u8>,
    pub way: Option<Way>,
    pub link: LinkType,
}

#[derive(Debug)]
pub enum Error {
    Io(io::Error),
    /// Not a pcap or pcapng file.
    NotACapture,
    UnsupportedLinkType(u32),
    /// The file ends, or a length field points, past what is there.
    Truncated {
        offset: u64,
    },
    Corrupt {
        offset: u64,
        what: &'static str,
    },
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Io(e) => write!(f, "{e}"),
            Self::NotACapture => write!(f, "not a pcap or pcapng file"),
            Self::UnsupportedLinkType(c) => write!(
                f,
                "unsupported link type {c} (supported: Ethernet 1, Linux cooked SLL 113 and SLL2 276, raw IP 12/14/101/228/229, BSD loopback 0/108, NFLOG 239, Cisco HDLC 104, PPP 9/50, IP over InfiniBand 242)"
            ),
            Self::Truncated { offset } => write!(f, "truncated at byte {offset}"),
            Self::Corrupt { offset, what } => write!(f, "corrupt at byte {offset}: {what}"),
        }
    }
}

impl std::error::Error for Error {}

impl From<io::Error> for Error {
    fn from(e: io::Error) -> Self {
        Self::Io(e)
    }
}

/// Largest block or record we accept: no real capture has larger ones, and
/// a corrupt length must not make us allocate gigabytes.
const MAX_RECORD: u32 = 16 * 1024 * 1024;

enum Format {
    Pcap {
        big_endian: bool,
        nanos: bool,
        link: LinkType,
    },
    PcapNg {
        big_endian: bool,
        interfaces: Vec<(LinkType, u64)>,
    },
}

pub struct Reader {
    input: BufReader<Box<dyn Read + Send>>,
    offset: u64,
    format: Format,
    /// Bytes in the file, for progress.
    pub size: u64,
    /// Bytes read from the file (compressed, when it is).
    read: Arc<AtomicU64>,
    /// Timestamps whose fraction field was out of range, clamped.
    pub clamped_timestamps: u64,
    /// What the file was compressed with, if it was.
    pub compression: Option<&'static str>,
}

/// Counts the bytes read from the file, under a decompressor.
struct Counting {
    file: File,
    read: Arc<AtomicU64>,
}

impl Read for Counting {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.file.read(buf)?;
        self.read.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

fn u16_of(b: &[u8], big: bool) -> u16 {
    let a = [b[0], b[1]];
    if big {
        u16::from_be_bytes(a)
    } else {
        u16::from_le_bytes(a)
    }
}

fn u32_of(b: &[u8], big: bool) -> u32 {
    let a = [b[0], b[1], b[2], b[3]];
    if big {
        u32::from_be_bytes(a)
    } else {
        u32::from_le_bytes(a)
    }
}

impl Reader {
    pub fn open(path: &Path) -> Result<Self, Error> {
        let mut file = File::open(path)?;
        let size = file.metadata()?.len();
        // gzip and zstd are read as they come: archives and corpora keep
        // captures that way.
        let mut magic = [0u8; 4];
        let n = file.read(&mut magic)?;
        io::Seek::seek(&mut file, io::SeekFrom::Start(0))?;
        let read = Arc::new(AtomicU64::new(0));
        let counting = Counting {
            file,
            read: Arc::clone(&read),
        };
        let (input, compression): (Box<dyn Read + Send>, _) = match magic {
            [0x1f, 0x8b, ..] if n >= 2 => (
                Box::new(flate2::read::MultiGzDecoder::new(BufReader::new(counting))),
                Some("gzip"),
            ),
            [0x28, 0xb5, 0x2f, 0xfd] if n == 4 => (
                Box::new(
                    ruzstd::decoding::StreamingDecoder::new(BufReader::new(counting))
                        .map_err(|e| io::Error::other(format!("zstd: {e}")))?,
                ),
                Some("zstd"),
            ),
            _ => (Box::new(counting), None),
        };
        let mut reader = Self {
            input: BufReader::with_capacity(1 << 20, input),
            offset: 0,
            format: Format::Pcap {
                big_endian: false,
                nanos: false,
                link: LinkType::Ethernet,
            },
            size,
            read,
            clamped_timestamps: 0,
            compression,
        };
        let mut magic = [0u8; 4];
        if reader.read_exact_or_eof(&mut magic)? == 0 {
            return Err(Error::NotACapture);
        }
        reader.format = match u32::from_le_bytes(magic) {
            0xa1b2_c3d4 => reader.pcap_header(false, false)?,
            0xd4c3_b2a1 => reader.pcap_header(true, false)?,
            0xa1b2_3c4d => reader.pcap_header(false, true)?,
            0x4d3c_b2a1 => reader.pcap_header(true, true)?,
            0x0a0d_0d0a => reader.pcapng_section()?,
            _ => return Err(Error::NotACapture),
        };
        Ok(reader)
    }

    /// Bytes of the file read so far, for progress.
    pub fn offset(&self) -> u64 {
        self.read.load(Ordering::Relaxed).min(self.size)
    }

    /// Reads exactly `buf.len()` bytes; 0 at a clean end of file, Truncated
    /// at an end in the middle.
    fn read_exact_or_eof(&mut self, buf: &mut [u8]) -> Result<usize, Error> {
        let mut got = 0;
        while got < buf.len() {
            let n = self.input.read(&mut buf[got..])?;
            if n == 0 {
                return if got == 0 {
                    Ok(0)
                } else {
                    Err(Error::Truncated {
                        offset: self.offset + got as u64,
                    })
                };
            }
            got += n;
        }
        self.offset += got as u64;
        Ok(got)
    }

    /// Reads a record's `len` bytes into a new buffer, not zeroed first.
    fn read_record(&mut self, len: usize) -> Result<Vec<u8>, Error> {
        let mut data = Vec::with_capacity(len);
        let got = (&mut self.input).take(len as u64).read_to_end(&mut data)?;
        self.offset += got as u64;
        if got < len {
            return Err(Error::Truncated {
                offset: self.offset,
            });
        }
        Ok(data)
    }

    fn read_exact(&mut self, buf: &mut [u8]) -> Result<(), Error> {
        if self.read_exact_or_eof(buf)? == 0 && !buf.is_empty() {
            return Err(Error::Truncated {
                offset: self.offset,
            });
        }
        Ok(())
    }

    fn pcap_header(&mut self, big: bool, nanos: bool) -> Result<Format, Error> {
        let mut rest = [0u8; 20];
        self.read_exact(&mut rest)?;
        // version (4), thiszone (4), sigfigs (4), snaplen (4), network (4):
        // the link type is its low 16 bits; above them, the FCS length and
        // its flag (bits 26-31) and reserved bits.
        let code = u32_of(&rest[16..20], big) & 0xffff;
        let link = LinkType::from_code(code);
        if let LinkType::Other(code) = link {
            // One link type for the whole file: nothing in it could be read.
            return Err(Error::UnsupportedLinkType(code));
        }
        Ok(Format::Pcap {
            big_endian: big,
            nanos,
            link,
        })
    }

    fn pcapng_section(&mut self) -> Result<Format, Error> {
        let mut head = [0u8; 8];
        self.read_exact(&mut head)?;
        let big = match u32::from_le_bytes([head[4], head[5], head[6], head[7]]) {
            0x1a2b_3c4d => false,
            0x4d3c_2b1a => true,
            _ => {
                return Err(Error::Corrupt {
                    offset: self.offset,
                    what: "bad byte-order magic",
                });
            }
        };
        let total = u32_of(&head[0..4], big);
        if !(28..=MAX_RECORD).contains(&total) || !total.is_multiple_of(4) {
            return Err(Error::Corrupt {
                offset: self.offset,
                what: "bad section header length",
            });
        }
        let mut rest = vec![0u8; total as usize - 12];
        self.read_exact(&mut rest)?;
        Ok(Format::PcapNg {
            big_endian: big,
            interfaces: Vec::new(),
        })
    }

    /// The next packet, or None at the end of the capture.
    pub fn next_packet(&mut self) -> Result<Option<Packet>, Error> {
        loop {
            let start = self.offset;
            let raw = match &self.format {
                Format::Pcap {
                    big_endian,
                    nanos,
                    link,
                } => {
                    let (big, nanos, link) = (*big_endian, *nanos, *link);
                    let mut rec = [0u8; 16];
                    if self.read_exact_or_eof(&mut rec)? == 0 {
                        return Ok(None);
                    }
                    let (secs, frac, caplen) = (
                        u32_of(&rec[0..4], big),
                        u32_of(&rec[4..8], big),
                        u32_of(&rec[8..12], big),
                    );
                    if caplen > MAX_RECORD {
                        return Err(Error::Corrupt {
                            offset: start,
                            what: "record length",
                        });
                    }
                    let data = self.read_record(caplen as usize)?;
                    // A fraction of a second at or past a whole second (a
                    // broken writer) would add up to 2147 s: clamped.
                    let (unit, most) = if nanos {
                        (1, 999_999_999)
                    } else {
                        (1000, 999_999)
                    };
                    if frac > most {
                        self.clamped_timestamps += 1;
                    }
                    let ts_ns = u64::from(secs) * 1_000_000_000 + u64::from(frac.min(most)) * unit;
                    Some((ts_ns, link, data, None))
                }
                Format::PcapNg { .. } => self.pcapng_block(start)?,
            };
            match raw {
                None => {}
                Some((ts_ns, link, data, way)) => {
                    // An Ethernet frame is the record itself: no second copy.
                    let (frame, cooked_way) = if link == LinkType::Ethernet {
                        (data, None)
                    } else {
                        to_ethernet(link, &data)
                    };
                    return Ok(Some(Packet {
                        ts_ns,
                        frame,
                        way: way.or(cooked_way),
                        link,
                    }));
                }
            }
            if self.offset == start {
                return Ok(None);
            }
        }
    }

    /// Reads one pcapng block; a packet for packet blocks, None for others
    /// (and for the end of the file, where the offset does not move).
    #[expect(
        clippy::type_complexity,
        reason = "a private tuple, named at its one use"
    )]
    fn pcapng_block(
        &mut self,
        start: u64,
    ) -> Result<Option<(u64, LinkType, Vec<u8>, Option<Way>)>, Error> {
        let Format::PcapNg { big_endian, .. } = self.format else {
            return Ok(None);
        };
        let big = big_endian;
        let mut head = [0u8; 8];
        if self.read_exact_or_eof(&mut head)? == 0 {
            return Ok(None);
        }
        let (kind, total) = (u32_of(&head[0..4], big), u32_of(&head[4..8], big));
        if kind == 0x0a0d_0d0a {
            // A new section: may switch byte order; interfaces start over.
            let order = [head[4], head[5], head[6], head[7]];
            let mut rest_head = [0u8; 4];
            self.read_exact(&mut rest_head)?;
            let big = match u32::from_le_bytes(rest_head) {
                0x1a2b_3c4d => false,
                0x4d3c_2b1a => true,
                _ => {
                    return Err(Error::Corrupt {
                        offset: start,
                        what: "bad byte-order magic",
                    });
                }
            };
            let total = u32_of(&order, big);
            if !(28..=MAX_RECORD).contains(&total) || !total.is_multiple_of(4) {
                return Err(Error::Corrupt {
                    offset: start,
                    what: "bad section header length",
                });
            }
            let mut rest = vec![0u8; total as usize - 12];
            self.read_exact(&mut rest)?;
            self.format = Format::PcapNg {
                big_endian: big,
                interfaces: Vec::new(),
            };
            return Ok(None);
        }
        if !(12..=MAX_RECORD).contains(&total) || !total.is_multiple_of(4) {
            return Err(Error::Corrupt {
                offset: start,
                what: "bad block length",
            });
        }
        let mut body = vec![0u8; total as usize - 8];
        self.read_exact(&mut body)?;
        let body = &body[..body.len() - 4]; // trailing length copy
        let Format::PcapNg { interfaces, .. } = &mut self.format else {
            return Ok(None);
        };
        match kind {
            // Interface description: link type, and the timestamp unit.
            1 => {
                if body.len() < 8 {
                    return Err(Error::Corrupt {
                        offset: start,
                        what: "short interface block",
                    });
                }
                let code = u32::from(u16_of(&body[0..2], big));
                let link = LinkType::from_code(code);
                let mut units_per_sec = 1_000_000u64;
                let mut opts = &body[8..];
                while opts.len() >= 4 {
                    let (code, len) = (
                        u16_of(&opts[0..2], big),
                        usize::from(u16_of(&opts[2..4], big)),
                    );
                    if code == 0 || opts.len() < 4 + len {
                        break;
                    }
                    if code == 9 && len >= 1 {
                        let v = opts[4];
                        units_per_sec = if v & 0x80 == 0 {
                            10u64.saturating_pow(u32::from(v))
                        } else {
                            1u64 << (v & 0x7f).min(63)
                        };
                    }
                    opts = &opts[4 + len.div_ceil(4) * 4..];
                }
                interfaces.push((link, units_per_sec.max(1)));
                Ok(None)
            }
            // Enhanced packet block.
            6 => {
                if body.len() < 20 {
                    return Err(Error::Corrupt {
                        offset: start,
                        what: "short packet block",
                    });
                }
                let iface = u32_of(&body[0..4], big) as usize;
                let &(link, units) = interfaces.get(iface).ok_or(Error::Corrupt {
                    offset: start,
                    what: "packet names an unknown interface",
                })?;
                let ts = (u64::from(u32_of(&body[4..8], big)) << 32)
                    | u64::from(u32_of(&body[8..12], big));
                let caplen = u32_of(&body[12..16], big) as usize;
                if 20 + caplen > body.len() {
                    return Err(Error::Corrupt {
                        offset: start,
                        what: "packet longer than its block",
                    });
                }
                let data = body[20..20 + caplen].to_vec();
                let mut way = None;
                let mut opts = &body[20 + caplen.div_ceil(4) * 4..];
                while opts.len() >= 4 {
                    let (code, len) = (
                        u16_of(&opts[0..2], big),
                        usize::from(u16_of(&opts[2..4], big)),
                    );
                    if code == 0 || opts.len() < 4 + len {
                        break;
                    }
                    if code == 2 && len >= 4 {
                        way = match u32_of(&opts[4..8], big) & 0x3 {
                            1 => Some(Way::Incoming),
                            2 => Some(Way::Outgoing),
                            _ => None,
                        };
                    }
                    opts = &opts[4 + len.div_ceil(4) * 4..];
                }
                let ts_ns = (u128::from(ts) * 1_000_000_000 / u128::from(units)) as u64;
                Ok(Some((ts_ns, link, data, way)))
            }
            // Simple packet block: interface 0, no timestamp.
            3 => {
                let &(link, _) = interfaces.first().ok_or(Error::Corrupt {
                    offset: start,
                    what: "packet before any interface",
                })?;
                if body.len() < 4 {
                    return Err(Error::Corrupt {
                        offset: start,
                        what: "short simple packet block",
                    });
                }
                let len = (u32_of(&body[0..4], big) as usize).min(body.len() - 4);
                Ok(Some((0, link, body[4..4 + len].to_vec(), None)))
            }
            _ => Ok(None), // statistics, name resolution, custom: not ours
        }
    }
}

const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86dd;
/// SLL/SLL2 packet type of a packet this host sent.
const PACKET_OUTGOING: u8 = 4;

fn ethernet(ethertype: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(14 + payload.len());
    f.extend_from_slice(&[0x02, 0, 0, 0, 0, 0x02, 0x02, 0, 0, 0, 0, 0x01]);
    f.extend_from_slice(&ethertype.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// The captured bytes as an Ethernet frame, and the direction a cooked
/// header records. A cooked header that is cut short yields an empty frame.
pub fn to_ethernet(link: LinkType, data: &[u8]) -> (Vec<u8>, Option<Way>) {
    let way = |t: u8| {
        Some(if t == PACKET_OUTGOING {
            Way::Outgoing
        } else {
            Way::Incoming
        })
    };
    match link {
        LinkType::Ethernet => (data.to_vec(), None),
        LinkType::LinuxSll if data.len() >= 16 => (
            ethernet(u16::from_be_bytes([data[14], data[15]]), &data[16..]),
            way(data[1]),
        ),
        LinkType::LinuxSll2 if data.len() >= 20 => (
            ethernet(u16::from_be_bytes([data[0], data[1]]), &data[20..]),
            way(data[10]),
        ),
        LinkType::RawIp => {
            let ethertype = if data.first().is_some_and(|b| b >> 4 == 6) {
                ETH_P_IPV6
            } else {
                ETH_P_IP
            };
            (ethernet(ethertype, data), None)
        }
        LinkType::Loopback if data.len() > 4 => (ip(&data[4..]), None),
        LinkType::Nflog => (nflog_payload(data).map(ip).unwrap_or_default(), None),
        LinkType::CiscoHdlc if data.len() >= 4 => (
            ethernet(u16::from_be_bytes([data[2], data[3]]), &data[4..]),
            None,
        ),
        LinkType::IpOverInfiniband if data.len() >= 4 => {
            // Linux writes the two 20-byte hardware addresses first.
            let at = if ipoib_linux_header(data) { 40 } else { 0 };
            let ethertype = u16::from_be_bytes([data[at], data[at + 1]]);
            (ethernet(ethertype, &data[at + 4..]), None)
        }
        LinkType::Ppp => (ppp_payload(data).map(ip).unwrap_or_default(), None),
        LinkType::LinuxSll
        | LinkType::LinuxSll2
        | LinkType::Loopback
        | LinkType::CiscoHdlc
        | LinkType::IpOverInfiniband
        | LinkType::Other(_) => (Vec::new(), None),
    }
}

/// An IP packet as an Ethernet frame, the ethertype from its version.
fn ip(packet: &[u8]) -> Vec<u8> {
    let ethertype = if packet.first().is_some_and(|b| b >> 4 == 6) {
        ETH_P_IPV6
    } else {
        ETH_P_IP
    };
    ethernet(ethertype, packet)
}

/// Whether an IP-over-InfiniBand record starts with Linux's source and
/// destination hardware addresses (20 bytes each) before the RFC 4391
/// header (a type and two reserved bytes), as Wireshark also tells them.
fn ipoib_linux_header(data: &[u8]) -> bool {
    matches!(
        data.get(40..44),
        Some([0x08, 0x00 | 0x06, 0, 0] | [0x86, 0xdd, 0, 0])
    )
}

/// The IP packet a PPP frame carries: after an optional address and
/// control (ff 03; a Cisco HDLC address, 0f or 8f, also occurs under this
/// link type, with an Ethernet type), a one- or two-byte protocol number:
/// IPv4 (0x21) or IPv6 (0x57).
fn ppp_payload(data: &[u8]) -> Option<&[u8]> {
    match data {
        [0xff, 0x03, rest @ ..] => ppp_protocol(rest),
        [0x0f | 0x8f, _, 0x08, 0x00, rest @ ..] | [0x0f | 0x8f, _, 0x86, 0xdd, rest @ ..] => {
            Some(rest)
        }
        _ => ppp_protocol(data),
    }
}

fn ppp_protocol(data: &[u8]) -> Option<&[u8]> {
    match data {
        [0x00, 0x21 | 0x57, rest @ ..] | [0x21 | 0x57, rest @ ..] => Some(rest),
        _ => None,
    }
}

/// The packet an NFLOG record carries: after a 4-byte header (family,
/// version, resource id), TLVs of a host-order 16-bit length (header
/// included) and type, padded to 4 bytes; the payload is type 9.
fn nflog_payload(data: &[u8]) -> Option<&[u8]> {
    let mut rest = data.get(4..)?;
    while rest.len() >= 4 {
        let len = usize::from(u16::from_ne_bytes([rest[0], rest[1]]));
        let kind = u16::from_ne_bytes([rest[2], rest[3]]) & 0x7fff;
        if len < 4 || len > rest.len() {
            return None;
        }
        if kind == 9 {
            return Some(&rest[4..len]);
        }
        rest = rest.get(len.div_ceil(4) * 4..)?;
    }
    None
}

#[cfg(test)]
mod link_tests {
    use super::*;

    const V4: [u8; 20] = [
        0x45, 0, 0, 20, 0, 0, 0, 0, 64, 6, 0, 0, 198, 18, 0, 1, 198, 18, 0, 2,
    ];

    #[test]
    fn bsd_loopback_and_nflog_become_ethernet() {
        let mut null = vec![2, 0, 0, 0];
        null.extend_from_slice(&V4);
        let (frame, _) = to_ethernet(LinkType::from_code(0), &null);
        assert_eq!(&frame[12..14], &[0x08, 0x00]);
        assert_eq!(&frame[14..], &V4);
        let mut nflog = vec![2, 0, 0, 0];
        // A prefix TLV (type 10, 5 bytes, padded), then the payload (9).
        nflog.extend_from_slice(&5u16.to_ne_bytes());
        nflog.extend_from_slice(&10u16.to_ne_bytes());
        nflog.extend_from_slice(&[b'x', 0, 0, 0]);
        nflog.extend_from_slice(&24u16.to_ne_bytes());
        nflog.extend_from_slice(&9u16.to_ne_bytes());
        nflog.extend_from_slice(&V4);
        let (frame, _) = to_ethernet(LinkType::from_code(239), &nflog);
        assert_eq!(&frame[14..], &V4);
        assert!(to_ethernet(LinkType::from_code(147), &V4).0.is_empty());
    }

    #[test]
    fn hdlc_ppp_and_ipoib_become_ethernet() {
        let framed = |head: &[u8]| {
            let mut f = head.to_vec();
            f.extend_from_slice(&V4);
            f
        };
        for (code, head) in [
            (104, &[0x0f, 0x00, 0x08, 0x00][..]),
            (9, &[0xff, 0x03, 0x00, 0x21][..]),
            (9, &[0x00, 0x21][..]),
            (50, &[0xff, 0x03, 0x21][..]),
            (9, &[0x0f, 0x00, 0x08, 0x00][..]),
            (242, &[0x08, 0x00, 0x00, 0x00][..]),
        ] {
            let (frame, _) = to_ethernet(LinkType::from_code(code), &framed(head));
            assert_eq!(&frame[12..14], &[0x08, 0x00], "link type {code} {head:x?}");
            assert_eq!(&frame[14..], &V4, "link type {code} {head:x?}");
        }
        // IPoIB as Linux captures it: two hardware addresses first.
        let mut linux = vec![0u8; 40];
        linux.extend_from_slice(&framed(&[0x08, 0x00, 0x00, 0x00]));
        let (frame, _) = to_ethernet(LinkType::from_code(242), &linux);
        assert_eq!(&frame[14..], &V4);
        // PPP's control protocols carry no IP: nothing to run.
        let lcp = framed(&[0xff, 0x03, 0xc0, 0x21]);
        assert!(to_ethernet(LinkType::from_code(9), &lcp).0.is_empty());
    }

    #[test]
    fn fcs_bits_of_the_link_type_are_not_the_link_type() {
        // Ethernet with its F flag (bit 26) and an FCS length of 2 (bits
        // 28-31), as tcpdump's own test captures hold.
        let mut file = Vec::new();
        file.extend_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
        file.extend_from_slice(&[2, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 4, 0]);
        file.extend_from_slice(&0x2400_0001u32.to_le_bytes());
        let path = std::env::temp_dir().join(format!("hm-fcs-{}.pcap", std::process::id()));
        std::fs::write(&path, &file).expect("write a capture");
        let reader = Reader::open(&path);
        std::fs::remove_file(&path).expect("remove it");
        let Format::Pcap { link, .. } = reader.expect("an Ethernet capture").format else {
            panic!("not read as a classic pcap");
        };
        assert_eq!(link, LinkType::Ethernet);
    }
}
