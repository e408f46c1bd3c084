//! B2: line rate on veth, established traffic and a random-source flood,
//! with and without the programs attached.
use super::*;

/// (rx_packets, rx_dropped) of `dev` in `ns`.
pub(crate) fn rx_stats(ns: &Netns, dev: &str) -> (u64, u64) {
    let out = Command::new("ip")
        .args(["-n", &ns.name, "-j", "-s", "link", "show", dev])
        .output()
        .expect("ip");
    let text = String::from_utf8_lossy(&out.stdout);
    let rx = &text[text.find("\"rx\":{").expect("rx stats")..];
    let field = |k: &str| -> u64 {
        let at = rx.find(&format!("\"{k}\":")).expect("field") + k.len() + 3;
        rx[at..]
            .split(|c: char| !c.is_ascii_digit())
            .next()
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    };
    (field("packets"), field("dropped"))
}

/// Sends `frames` (cycled) out of the client's c0 with sendmmsg for
/// `seconds`; returns how many were sent.
pub(crate) fn blast(topo: &Topology, frames: Arc<Vec<Vec<u8>>>, seconds: f64) -> u64 {
    topo.client.run(move || {
        let ifindex = ifindex(CLIENT_IF);
        // SAFETY: socket calls with valid buffers; the iovecs and headers
        // point into `frames`, which outlives the calls.
        unsafe {
            let fd = libc::socket(libc::AF_PACKET, libc::SOCK_RAW, 0);
            assert!(fd >= 0);
            let mut addr: libc::sockaddr_ll = std::mem::zeroed();
            addr.sll_family = libc::AF_PACKET as u16;
            addr.sll_ifindex = ifindex as i32;
            assert_eq!(
                libc::bind(
                    fd,
                    (&addr as *const libc::sockaddr_ll).cast(),
                    size_of::<libc::sockaddr_ll>() as u32
                ),
                0
            );
            // Bypass the qdisc: measure the receiver, not the sender's queue.
            let one: i32 = 1;
            libc::setsockopt(
                fd,
                libc::SOL_PACKET,
                20, /* PACKET_QDISC_BYPASS */
                (&one as *const i32).cast(),
                4,
            );
            const BATCH: usize = 64;
            let mut iovs: Vec<libc::iovec> = frames
                .iter()
                .map(|f| libc::iovec {
                    iov_base: f.as_ptr() as *mut _,
                    iov_len: f.len(),
                })
                .collect();
            let mut msgs: Vec<libc::mmsghdr> = iovs
                .iter_mut()
                .map(|iov| {
                    let mut m: libc::mmsghdr = std::mem::zeroed();
                    m.msg_hdr.msg_iov = iov;
                    m.msg_hdr.msg_iovlen = 1;
                    m
                })
                .collect();
            let deadline = Instant::now() + Duration::from_secs_f64(seconds);
            let mut sent = 0u64;
            let mut at = 0usize;
            while Instant::now() < deadline {
                let n = BATCH.min(msgs.len() - at);
                let r = libc::sendmmsg(fd, msgs.as_mut_ptr().add(at), n as u32, 0);
                if r > 0 {
                    sent += r as u64;
                }
                at = (at + n) % msgs.len();
            }
            libc::close(fd);
            sent
        }
    })
}

pub(crate) fn quiet_topology() -> Topology {
    Topology::ipv4_only()
}

/// Frames addressed to a MAC that is not the server's: the stack drops
/// them right after XDP, so the receiver's cost is XDP's.
pub(crate) fn otherhost(mut frames: Vec<Vec<u8>>) -> Vec<Vec<u8>> {
    for f in &mut frames {
        f[0..6].copy_from_slice(&[0x02, 0, 0, 0, 0, 0x99]);
        f[6..12].copy_from_slice(&[0x02, 0, 0, 0, 0, 0x01]);
    }
    frames
}

pub(crate) fn b2(s: &Settings, rows: &mut Vec<Row>) {
    eprintln!(
        "B2 line rate on veth (native XDP), {} x {:.0} s per program",
        s.runs, s.seconds
    );
    let established = Arc::new(otherhost(
        (0..256)
            .map(|i| data_segment(&Packet::tcp(v4(1), 40000 + i, v4(2), 80)))
            .collect(),
    ));
    let flood = Arc::new(otherhost(
        distinct_clients(65536, false, false)
            .iter()
            .map(|c| syn(c, 1).build())
            .collect(),
    ));
    for (name, frames, goal) in [
        ("established traffic", established, 0.90),
        ("random-source SYN flood", flood, 0.75),
    ] {
        let topo = quiet_topology();
        let (mut base, mut ours, mut ratio) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..s.runs {
            let mut pps = [0.0; 2];
            for (i, is_ours) in [false, true].into_iter().enumerate() {
                let stop = attach_in(
                    &topo.server,
                    SERVER_IF,
                    is_ours,
                    IngressPlan::Xdp {
                        mode: XdpMode::Driver,
                        fallback: Fallback::None,
                    },
                );
                let (rx0, drop0) = rx_stats(&topo.server, SERVER_IF);
                let t0 = Instant::now();
                blast(&topo, Arc::clone(&frames), s.seconds);
                let elapsed = t0.elapsed().as_secs_f64();
                thread::sleep(Duration::from_millis(100));
                let (rx1, drop1) = rx_stats(&topo.server, SERVER_IF);
                drop(stop);
                pps[i] = (rx1 - rx0).saturating_sub(drop1 - drop0) as f64 / elapsed;
            }
            base.push(pps[0]);
            ours.push(pps[1]);
            ratio.push(pps[1] / pps[0]);
        }
        let r = median(&mut ratio);
        rows.push(Row {
            bench: "B2",
            case: name.to_owned(),
            baseline: format!("{:.0} kpps", median(&mut base) / 1e3),
            ours: format!("{:.0} kpps", median(&mut ours) / 1e3),
            figure: format!("{r:.3}x"),
            goal: format!(">= {goal:.2}x"),
            verdict: verdict(Some(r >= goal)),
        });
        eprintln!("  B2 {name}: {r:.3}x");
    }
}
