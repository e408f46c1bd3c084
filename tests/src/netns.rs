//! Network namespaces and veth pairs that live as long as the test.
use std::{
    fs::File,
    os::fd::AsRawFd as _,
    process::Command,
    sync::atomic::{AtomicU32, Ordering},
    thread,
};

use anyhow::{Context as _, Result, bail};

/// Runs `ip` with `args`, failing with its stderr.
pub fn ip(args: &[&str]) -> Result<()> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .context("cannot run ip (iproute2)")?;
    if !out.status.success() {
        bail!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// The index of interface `dev` in the calling thread's network namespace
/// (0 if there is none). /sys/class/net would answer for the namespace
/// sysfs was mounted in, not the thread's.
pub fn ifindex(dev: &str) -> u32 {
    let Ok(name) = std::ffi::CString::new(dev) else {
        return 0;
    };
    // SAFETY: a valid C string.
    unsafe { libc::if_nametoindex(name.as_ptr()) }
}

/// A network namespace, deleted on drop.
#[derive(Debug)]
pub struct Netns {
    pub name: String,
}

impl Netns {
    /// A new namespace with only `lo`, which is brought up.
    pub fn new(role: &str) -> Self {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "hm-{}-{}-{role}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        ip(&["netns", "add", &name]).expect("create a network namespace (are we root?)");
        let ns = Self { name };
        ns.ip(&["link", "set", "lo", "up"]).expect("bring lo up");
        ns
    }

    /// Runs `ip` inside this namespace.
    pub fn ip(&self, args: &[&str]) -> Result<()> {
        let mut full = vec!["-n", self.name.as_str()];
        full.extend_from_slice(args);
        ip(&full)
    }

    /// Runs `f` on a thread that has entered this namespace.
    pub fn spawn<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> thread::JoinHandle<T> {
        let path = format!("/run/netns/{}", self.name);
        thread::spawn(move || {
            let file = File::open(&path).unwrap_or_else(|e| panic!("open {path}: {e}"));
            // SAFETY: a valid namespace fd; setns only affects this thread.
            let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(rc, 0, "setns {path}: {}", std::io::Error::last_os_error());
            f()
        })
    }

    /// Listens on `addr` in this namespace and accepts (and closes) exactly
    /// `n` connections; returns once listening, with a handle that yields
    /// how many were accepted.
    pub fn accept_n(&self, addr: std::net::SocketAddr, n: usize) -> thread::JoinHandle<usize> {
        let (tx, rx) = std::sync::mpsc::channel();
        let handle = self.spawn(move || {
            let listener =
                std::net::TcpListener::bind(addr).unwrap_or_else(|e| panic!("bind {addr}: {e}"));
            tx.send(()).expect("ready");
            (0..n)
                .map(|_| drop(listener.accept().expect("accept")))
                .count()
        });
        rx.recv().expect("listener ready");
        handle
    }

    /// Opens (and closes) `n` connections to `addr` from this namespace.
    pub fn connect_n(&self, addr: std::net::SocketAddr, n: usize) {
        self.run(move || {
            for _ in 0..n {
                drop(
                    std::net::TcpStream::connect(addr)
                        .unwrap_or_else(|e| panic!("connect {addr}: {e}")),
                );
            }
        });
    }

    /// Runs `f` inside this namespace and returns its result.
    pub fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        self.spawn(f)
            .join()
            .unwrap_or_else(|e| std::panic::resume_unwind(e))
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Deleting the namespace deletes the veth ends in it.
        let _ = ip(&["netns", "delete", &self.name]);
    }
}

pub const CLIENT_V4: &str = "198.18.0.1";
pub const SERVER_V4: &str = "198.18.0.2";
pub const CLIENT_V6: &str = "2001:2::1";
pub const SERVER_V6: &str = "2001:2::2";
/// The veth end in each namespace.
pub const CLIENT_IF: &str = "c0";
pub const SERVER_IF: &str = "s0";

/// A client and a server namespace joined by a veth pair: `c0` in the client
/// (198.18.0.1/24, 2001:2::1/64), `s0` in the server (198.18.0.2/24,
/// 2001:2::2/64). No default route anywhere.
pub struct Topology {
    pub client: Netns,
    pub server: Netns,
}

impl Topology {
    pub fn new() -> Self {
        Self::build(true)
    }

    /// IPv4 only, IPv6 off before the link comes up: no router
    /// solicitations or MLD reports, so every frame on the wire is one the
    /// test sent.
    pub fn ipv4_only() -> Self {
        Self::build(false)
    }

    fn build(v6: bool) -> Self {
        let client = Netns::new("client");
        let server = Netns::new("server");
        if !v6 {
            for ns in [&client, &server] {
                for conf in ["all", "default"] {
                    let key = format!("net.ipv6.conf.{conf}.disable_ipv6=1");
                    let ok = Command::new("ip")
                        .args(["netns", "exec", &ns.name, "sysctl", "-qw", &key])
                        .status()
                        .is_ok_and(|s| s.success());
                    assert!(ok, "sysctl {key}");
                }
            }
        }
        // Created directly inside the namespaces: the names never exist in
        // the root namespace, so parallel tests cannot collide.
        ip(&[
            "link",
            "add",
            CLIENT_IF,
            "netns",
            &client.name,
            "type",
            "veth",
            "peer",
            "name",
            SERVER_IF,
            "netns",
            &server.name,
        ])
        .expect("create veth pair");
        for (ns, dev, addr4, addr6) in [
            (&client, CLIENT_IF, CLIENT_V4, CLIENT_V6),
            (&server, SERVER_IF, SERVER_V4, SERVER_V6),
        ] {
            ns.ip(&["addr", "add", &format!("{addr4}/24"), "dev", dev])
                .expect("add IPv4 address");
            if v6 {
                // nodad: usable at once, no 2 s wait for duplicate detection.
                ns.ip(&["addr", "add", &format!("{addr6}/64"), "dev", dev, "nodad"])
                    .expect("add IPv6 address");
            }
            ns.ip(&["link", "set", dev, "up"]).expect("link up");
        }
        Self { client, server }
    }
}

impl Topology {
    /// MAC address of `dev` in `ns`.
    pub fn mac(ns: &Netns, dev: &str) -> [u8; 6] {
        let out = Command::new("ip")
            .args(["-n", &ns.name, "-j", "link", "show", dev])
            .output()
            .expect("ip link show");
        let text = String::from_utf8_lossy(&out.stdout);
        let at = text
            .find("\"address\":\"")
            .expect("address in ip -j output")
            + 11;
        let hex = &text[at..at + 17];
        let mut mac = [0u8; 6];
        for (i, b) in hex.split(':').enumerate() {
            mac[i] = u8::from_str_radix(b, 16).expect("mac byte");
        }
        mac
    }

    /// Sends raw Ethernet frames out of the client's `c0`, as they are:
    /// for spoofed sources and hand-made segments. The destination MAC is
    /// set to the server's `s0`.
    pub fn inject_from_client(&self, frames: Vec<Vec<u8>>) {
        let dst = Self::mac(&self.server, SERVER_IF);
        let src = Self::mac(&self.client, CLIENT_IF);
        self.inject(frames, Some((dst, src)));
    }

    /// As [`Topology::inject_from_client`], with the frames' own MAC
    /// addresses left as they are.
    pub fn inject_from_client_as_is(&self, frames: Vec<Vec<u8>>) {
        self.inject(frames, None);
    }

    fn inject(&self, frames: Vec<Vec<u8>>, macs: Option<([u8; 6], [u8; 6])>) {
        let dst = macs.map_or([0; 6], |m| m.0);
        self.client.run(move || {
            // One CPU: veth hands each frame to the receiving stack on the
            // sending CPU, so per-CPU state (the insert budget) sees them all.
            // SAFETY: a zeroed cpu_set_t is valid; one bit set, its size passed.
            unsafe {
                let mut set: libc::cpu_set_t = std::mem::zeroed();
                libc::CPU_SET(0, &mut set);
                assert_eq!(
                    libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &set),
                    0,
                    "pin to CPU 0"
                );
            }
            let ifindex = ifindex(CLIENT_IF);
            assert_ne!(ifindex, 0, "c0 in the client namespace");
            // SAFETY: plain socket calls with valid buffers and lengths.
            unsafe {
                let fd = libc::socket(libc::AF_PACKET, libc::SOCK_RAW, 0);
                assert!(
                    fd >= 0,
                    "AF_PACKET socket: {}",
                    std::io::Error::last_os_error()
                );
                let mut addr: libc::sockaddr_ll = std::mem::zeroed();
                addr.sll_family = libc::AF_PACKET as u16;
                addr.sll_ifindex = ifindex as i32;
                addr.sll_halen = 6;
                addr.sll_addr[..6].copy_from_slice(&dst);
                for mut frame in frames {
                    if let Some((dst, src)) = macs {
                        frame[0..6].copy_from_slice(&dst);
                        frame[6..12].copy_from_slice(&src);
                    }
                    let sent = libc::sendto(
                        fd,
                        frame.as_ptr().cast(),
                        frame.len(),
                        0,
                        (&addr as *const libc::sockaddr_ll).cast(),
                        size_of::<libc::sockaddr_ll>() as u32,
                    );
                    assert_eq!(
                        sent,
                        frame.len() as isize,
                        "sendto: {}",
                        std::io::Error::last_os_error()
                    );
                }
                libc::close(fd);
            }
        });
    }

    /// Makes `addr` (an address no host has) resolvable from the server to
    /// the client's MAC, so the server's SYN-ACKs to it leave through `s0`
    /// (and the egress program) and are dropped by the client's kernel,
    /// which does not own the address: a spoofed client that never answers.
    pub fn blackhole_via_client(&self, addr: &str) {
        let mac = Self::mac(&self.client, CLIENT_IF)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<Vec<_>>()
            .join(":");
        self.server
            .ip(&[
                "neigh",
                "replace",
                addr,
                "lladdr",
                &mac,
                "dev",
                SERVER_IF,
                "nud",
                "permanent",
            ])
            .expect("static neighbour");
    }
}

impl Default for Topology {
    fn default() -> Self {
        Self::new()
    }
}
