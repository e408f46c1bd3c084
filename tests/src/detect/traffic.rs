//! The traffic of the detection scenarios, all inside the scenario's own
//! client and server namespaces: a server whose listener can serve, hang
//! (stop accepting) or close; clients connecting at a set rate; a spoofed
//! SYN flood from 198.19.0.0/16 (routed by the server back into the client
//! namespace, which drops it); and a scan of closed ports.
use std::{
    net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream},
    os::fd::AsRawFd as _,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use crate::{
    netns::{CLIENT_IF, CLIENT_V4, Netns, SERVER_V4, Topology, ifindex},
    packet::{Packet, SYN},
};

/// The spoofed sources: never any host's, routed by the server into the
/// client namespace, whose kernel drops what it does not own.
pub const SPOOFED_NET: &str = "198.19.0.0/16";

/// What the server's listener does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Mode {
    /// Listen and accept (and close) every connection.
    Serve = 0,
    /// Keep the socket but never accept: the accept queue fills, then the
    /// kernel drops SYNs.
    Hang = 1,
    /// No socket: SYNs are refused with a RST.
    Closed = 2,
    Stop = 3,
}

/// A listener in the server namespace whose mode can change.
pub struct Server {
    mode: Arc<AtomicU8>,
    handle: Option<thread::JoinHandle<()>>,
}

impl Server {
    /// Listens on `port` with `backlog` and serves.
    pub fn start(ns: &Netns, port: u16, backlog: i32) -> Self {
        let mode = Arc::new(AtomicU8::new(Mode::Serve as u8));
        let (tx, rx) = std::sync::mpsc::channel();
        let m = Arc::clone(&mode);
        let handle = ns.spawn(move || {
            let addr = SocketAddr::new(SERVER_V4.parse().expect("ip"), port);
            let bind = || {
                let l = TcpListener::bind(addr).unwrap_or_else(|e| panic!("bind {addr}: {e}"));
                // SAFETY: listen(2) again on our own socket sets the backlog.
                let rc = unsafe { libc::listen(l.as_raw_fd(), backlog) };
                assert_eq!(rc, 0, "listen({backlog})");
                l.set_nonblocking(true).expect("nonblocking");
                l
            };
            let mut listener = Some(bind());
            tx.send(()).expect("ready");
            loop {
                match m.load(Ordering::Relaxed) {
                    0 => {
                        let l = listener.get_or_insert_with(bind);
                        while let Ok((s, _)) = l.accept() {
                            drop(s);
                        }
                        thread::sleep(Duration::from_millis(1));
                    }
                    1 => {
                        listener.get_or_insert_with(bind);
                        thread::sleep(Duration::from_millis(10));
                    }
                    2 => {
                        listener = None;
                        thread::sleep(Duration::from_millis(10));
                    }
                    _ => break,
                }
            }
        });
        rx.recv().expect("server ready");
        Self {
            mode,
            handle: Some(handle),
        }
    }

    pub fn set(&self, mode: Mode) {
        self.mode.store(mode as u8, Ordering::Relaxed);
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.set(Mode::Stop);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

/// Outcomes of the clients' connections.
#[derive(Debug, Default)]
pub struct Tally {
    pub started: AtomicU64,
    pub connected: AtomicU64,
    pub refused: AtomicU64,
    pub failed: AtomicU64,
}

/// Clients in the client namespace opening (and closing) connections to
/// one port at a rate that can change.
pub struct Clients {
    /// Connections per second, in thousandths.
    milli_rate: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    pub tally: Arc<Tally>,
    handle: Option<thread::JoinHandle<()>>,
}

impl Clients {
    pub fn start(ns: &Netns, port: u16, rate: f64) -> Self {
        let milli_rate = Arc::new(AtomicU64::new((rate * 1000.0) as u64));
        let stop = Arc::new(AtomicBool::new(false));
        let tally = Arc::new(Tally::default());
        let (r, s, t) = (
            Arc::clone(&milli_rate),
            Arc::clone(&stop),
            Arc::clone(&tally),
        );
        let handle = ns.spawn(move || {
            let addr = SocketAddr::new(SERVER_V4.parse().expect("ip"), port);
            let mut next = Instant::now();
            while !s.load(Ordering::Relaxed) {
                let rate = r.load(Ordering::Relaxed) as f64 / 1000.0;
                if rate <= 0.0 {
                    thread::sleep(Duration::from_millis(50));
                    next = Instant::now();
                    continue;
                }
                let now = Instant::now();
                if now < next {
                    thread::sleep((next - now).min(Duration::from_millis(50)));
                    continue;
                }
                next += Duration::from_secs_f64(1.0 / rate);
                let t = Arc::clone(&t);
                t.started.fetch_add(1, Ordering::Relaxed);
                // A thread per connection (it inherits the namespace): a
                // hung server must not slow the rate of new attempts.
                thread::spawn(move || {
                    match TcpStream::connect_timeout(&addr, Duration::from_secs(10)) {
                        Ok(c) => {
                            t.connected.fetch_add(1, Ordering::Relaxed);
                            drop(c);
                        }
                        Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                            t.refused.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(_) => {
                            t.failed.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                });
            }
        });
        Self {
            milli_rate,
            stop,
            tally,
            handle: Some(handle),
        }
    }

    pub fn set_rate(&self, rate: f64) {
        self.milli_rate
            .store((rate * 1000.0) as u64, Ordering::Relaxed);
    }
}

impl Drop for Clients {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

/// An AF_PACKET socket on the client's `c0`: frames go out with the
/// server's MAC as destination and the client's as source; with `receive`,
/// IP frames arriving on `c0` can be read (without blocking).
struct Wire {
    fd: std::os::fd::OwnedFd,
    addr: libc::sockaddr_ll,
    dst: [u8; 6],
    src: [u8; 6],
}

impl Wire {
    /// Opens it; call on a thread inside the client namespace.
    fn open(dst: [u8; 6], src: [u8; 6], receive: bool) -> Self {
        use std::os::fd::FromRawFd as _;
        let ifindex = ifindex(CLIENT_IF);
        assert_ne!(ifindex, 0, "c0 in the client namespace");
        let protocol = if receive {
            (libc::ETH_P_IP as u16).to_be()
        } else {
            0
        };
        // Sending blocks (a flood's pace is kept, not dropped); receiving
        // does not (the slow clients poll between sends).
        let kind = if receive {
            libc::SOCK_RAW | libc::SOCK_NONBLOCK
        } else {
            libc::SOCK_RAW
        };
        // SAFETY: a plain socket call.
        let fd = unsafe { libc::socket(libc::AF_PACKET, kind, i32::from(protocol)) };
        assert!(fd >= 0, "AF_PACKET: {}", std::io::Error::last_os_error());
        // SAFETY: a descriptor we just opened, owned from here.
        let fd = unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) };
        // SAFETY: a zeroed sockaddr_ll is valid; fields set below.
        let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        addr.sll_family = libc::AF_PACKET as u16;
        addr.sll_protocol = protocol;
        addr.sll_ifindex = ifindex as i32;
        addr.sll_halen = 6;
        addr.sll_addr[..6].copy_from_slice(&dst);
        if receive {
            // SAFETY: binding our socket to c0 with a valid address.
            unsafe {
                libc::bind(
                    std::os::fd::AsRawFd::as_raw_fd(&fd),
                    (&raw const addr).cast(),
                    size_of::<libc::sockaddr_ll>() as u32,
                )
            };
        }
        Self { fd, addr, dst, src }
    }

    /// Sends `frame` with the MACs set; whether it went out.
    fn send(&self, mut frame: Vec<u8>) -> bool {
        frame[0..6].copy_from_slice(&self.dst);
        frame[6..12].copy_from_slice(&self.src);
        // SAFETY: a valid buffer and address, lengths passed.
        let rc = unsafe {
            libc::sendto(
                std::os::fd::AsRawFd::as_raw_fd(&self.fd),
                frame.as_ptr().cast(),
                frame.len(),
                0,
                (&raw const self.addr).cast(),
                size_of::<libc::sockaddr_ll>() as u32,
            )
        };
        rc > 0
    }

    /// A frame into `buf` if one is waiting: its length, or a negative.
    fn recv(&self, buf: &mut [u8]) -> isize {
        // SAFETY: receiving into our buffer.
        unsafe {
            libc::recv(
                std::os::fd::AsRawFd::as_raw_fd(&self.fd),
                buf.as_mut_ptr().cast(),
                buf.len(),
                0,
            )
        }
    }
}

/// A paced sender of frames out of the client's `c0`, from its own thread.
pub struct Sender {
    stop: Arc<AtomicBool>,
    pub sent: Arc<AtomicU64>,
    handle: Option<thread::JoinHandle<()>>,
}

impl Sender {
    /// Sends `make(i)` frames at `rate` per second, in bursts of one
    /// millisecond's worth, while `on(elapsed)` says so.
    fn start(
        topo: &Topology,
        rate: f64,
        on: impl Fn(Duration) -> bool + Send + 'static,
        mut make: impl FnMut(u64) -> Vec<u8> + Send + 'static,
    ) -> Self {
        let dst = Topology::mac(&topo.server, crate::netns::SERVER_IF);
        let src = Topology::mac(&topo.client, CLIENT_IF);
        let stop = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(AtomicU64::new(0));
        let (s, n) = (Arc::clone(&stop), Arc::clone(&sent));
        let handle = topo.client.spawn(move || {
            let wire = Wire::open(dst, src, false);
            let start = Instant::now();
            let mut due = 0f64;
            let mut i = 0u64;
            while !s.load(Ordering::Relaxed) {
                let elapsed = start.elapsed();
                if !on(elapsed) {
                    due = elapsed.as_secs_f64() * rate;
                    thread::sleep(Duration::from_millis(5));
                    continue;
                }
                let target = elapsed.as_secs_f64() * rate;
                while due < target {
                    if wire.send(make(i)) {
                        n.fetch_add(1, Ordering::Relaxed);
                    }
                    due += 1.0;
                    i += 1;
                }
                thread::sleep(Duration::from_millis(1));
            }
        });
        Self {
            stop,
            sent,
            handle: Some(handle),
        }
    }

    /// Spoofed SYNs to `port` from random addresses of [`SPOOFED_NET`], at
    /// `rate` per second while `on(elapsed)`.
    pub fn syn_flood(
        topo: &Topology,
        port: u16,
        rate: f64,
        on: impl Fn(Duration) -> bool + Send + 'static,
    ) -> Self {
        route_spoofed(topo);
        let server: IpAddr = SERVER_V4.parse().expect("ip");
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15 ^ u64::from(port);
        Self::start(topo, rate, on, move |_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let w = x.to_be_bytes();
            let src = IpAddr::V4(Ipv4Addr::new(198, 19, w[0], w[1].max(1)));
            Packet::tcp(
                src,
                1024 + (u16::from_be_bytes([w[2], w[3]]) % 60000),
                server,
                port,
            )
            .flags(SYN)
            .seq(x as u32)
            .build()
        })
    }

    /// SYNs from the client's own address to closed ports (10000..60000),
    /// `rate` per second: each is refused with a RST.
    pub fn closed_port_scan(topo: &Topology, rate: f64) -> Self {
        let (client, server): (IpAddr, IpAddr) = (
            CLIENT_V4.parse().expect("ip"),
            SERVER_V4.parse().expect("ip"),
        );
        Self::start(
            topo,
            rate,
            |_| true,
            move |i| {
                let port = 10_000 + (i.wrapping_mul(7919) % 50_000) as u16;
                Packet::tcp(client, 40_000 + (i % 20_000) as u16, server, port)
                    .flags(SYN)
                    .seq(i as u32)
                    .build()
            },
        )
    }
}

impl Drop for Sender {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

/// Routes [`SPOOFED_NET`] from the server back into the client namespace:
/// the server's SYN-ACKs to those addresses leave through its egress
/// program, and the client's kernel drops them (it owns none of them).
fn route_spoofed(topo: &Topology) {
    topo.server
        .ip(&["route", "replace", SPOOFED_NET, "via", CLIENT_V4])
        .expect("route the spoofed sources");
}

/// Runs `nft -f -` with `rules` in a namespace.
fn nft(ns: &Netns, rules: &str) {
    use std::io::Write as _;
    let mut child = std::process::Command::new("ip")
        .args(["netns", "exec", &ns.name, "nft", "-f", "-"])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .expect("nft");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(rules.as_bytes())
        .expect("nft rules");
    assert!(child.wait().is_ok_and(|s| s.success()), "nft {rules}");
}

/// `pct` % of the TCP segments lost each way, in the client namespace
/// (nftables, at random: this kernel has no netem).
pub fn lossy(topo: &Topology, pct: u32) {
    nft(
        &topo.client,
        &format!(
            "table inet loss {{\n  chain out {{ type filter hook output priority 0; meta l4proto tcp numgen random mod 100 < {pct} drop; }}\n  chain in {{ type filter hook input priority 0; meta l4proto tcp numgen random mod 100 < {pct} drop; }}\n}}\n"
        ),
    );
}

pub fn lossless(topo: &Topology) {
    nft(&topo.client, "delete table inet loss\n");
}

/// Clients far away: handshakes from addresses of [`SPOOFED_NET`], made by
/// hand on the client's veth, whose final ACK goes out `rtt` after the
/// SYN-ACK arrives. They complete, `rtt` late (this kernel has no netem to
/// delay real clients).
pub struct SlowClients {
    stop: Arc<AtomicBool>,
    pub completed: Arc<AtomicU64>,
    handle: Option<thread::JoinHandle<()>>,
}

impl SlowClients {
    pub fn start(topo: &Topology, port: u16, rate: f64, rtt: Duration) -> Self {
        route_spoofed(topo);
        let dst = Topology::mac(&topo.server, crate::netns::SERVER_IF);
        let src = Topology::mac(&topo.client, CLIENT_IF);
        let stop = Arc::new(AtomicBool::new(false));
        let completed = Arc::new(AtomicU64::new(0));
        let (s, done) = (Arc::clone(&stop), Arc::clone(&completed));
        let handle = topo.client.spawn(move || {
            let wire = Wire::open(dst, src, true);
            let send = |frame: Vec<u8>| {
                wire.send(frame);
            };
            let server: IpAddr = SERVER_V4.parse().expect("ip");
            let start = Instant::now();
            let mut sent = 0u64;
            let mut x: u64 = 0x2545_f491_4f6c_dd1d;
            let mut acks: std::collections::VecDeque<(Instant, Vec<u8>)> = Default::default();
            let mut answered = std::collections::HashSet::new();
            let mut buf = vec![0u8; 2048];
            while !s.load(Ordering::Relaxed) {
                while (sent as f64) < start.elapsed().as_secs_f64() * rate {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    let w = x.to_be_bytes();
                    let client = IpAddr::V4(Ipv4Addr::new(198, 19, 128 | w[0], w[1].max(1)));
                    let sport = 1024 + u16::from_be_bytes([w[2], w[3]]) % 60000;
                    send(
                        Packet::tcp(client, sport, server, port)
                            .flags(SYN)
                            .seq(x as u32)
                            .build(),
                    );
                    sent += 1;
                }
                // SYN-ACKs to our clients: the ACK is due `rtt` later.
                let n = wire.recv(&mut buf);
                if n > 54 {
                    let f = &buf[..n as usize];
                    let ip = &f[14..];
                    let ihl = usize::from(ip[0] & 0x0f) * 4;
                    let tcp = &ip[ihl..];
                    let to_ours = ip[9] == 6 && ip[16] == 198 && ip[17] == 19 && ip[18] & 128 != 0;
                    if to_ours && tcp.len() >= 20 && tcp[13] & 0x12 == 0x12 {
                        let client = IpAddr::V4(Ipv4Addr::new(ip[16], ip[17], ip[18], ip[19]));
                        let cport = u16::from_be_bytes([tcp[2], tcp[3]]);
                        let y = u32::from_be_bytes([tcp[4], tcp[5], tcp[6], tcp[7]]);
                        let ack = u32::from_be_bytes([tcp[8], tcp[9], tcp[10], tcp[11]]);
                        if answered.insert((client, cport, y)) {
                            let frame = Packet::tcp(client, cport, server, port)
                                .flags(crate::packet::ACK)
                                .seq(ack)
                                .ack(y.wrapping_add(1))
                                .build();
                            acks.push_back((Instant::now() + rtt, frame));
                        }
                    }
                    continue;
                }
                while acks.front().is_some_and(|(due, _)| *due <= Instant::now()) {
                    if let Some((_, frame)) = acks.pop_front() {
                        send(frame);
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                }
                if answered.len() > 100_000 {
                    answered.clear();
                }
                thread::sleep(Duration::from_micros(500));
            }
        });
        Self {
            stop,
            completed,
            handle: Some(handle),
        }
    }
}

impl Drop for SlowClients {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}
