//! The listening sockets' accept queues, from the kernel's sock_diag
//! netlink interface (what `ss -lnt` shows as Recv-Q and Send-Q): for a
//! listener, how many completed connections wait for `accept()` and how
//! many its backlog allows. A hung application shows here first: its queue
//! fills while the wire still looks healthy, and only once it is full does
//! the kernel drop SYNs. One request per family per scan, listeners only.
use std::{collections::BTreeMap, io, mem::size_of};

const NETLINK_SOCK_DIAG: i32 = 4;
const SOCK_DIAG_BY_FAMILY: u16 = 20;
const TCP_LISTEN: u32 = 10;
const NLMSG_DONE: u16 = 3;
const NLMSG_ERROR: u16 = 2;

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct NlMsgHdr {
    len: u32,
    kind: u16,
    flags: u16,
    seq: u32,
    pid: u32,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct InetDiagSockId {
    sport: u16,
    dport: u16,
    src: [u32; 4],
    dst: [u32; 4],
    interface: u32,
    cookie: [u32; 2],
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct InetDiagReqV2 {
    family: u8,
    protocol: u8,
    ext: u8,
    pad: u8,
    states: u32,
    id: InetDiagSockId,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct InetDiagMsg {
    family: u8,
    state: u8,
    timer: u8,
    retrans: u8,
    id: InetDiagSockId,
    expires: u32,
    rqueue: u32,
    wqueue: u32,
    uid: u32,
    inode: u32,
}

/// One port's listeners: connections waiting for accept(), and what their
/// backlogs allow, summed over the sockets on the port.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AcceptQueue {
    pub queued: u64,
    pub limit: u64,
}

/// Every TCP listener of this network namespace, by local port.
pub fn accept_queues() -> io::Result<BTreeMap<u16, AcceptQueue>> {
    // SAFETY: a plain socket call.
    let fd = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_DGRAM | libc::SOCK_CLOEXEC,
            NETLINK_SOCK_DIAG,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: we own the descriptor from here on.
    let fd = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    let raw = std::os::fd::AsRawFd::as_raw_fd(&fd);
    let mut out = BTreeMap::new();
    for family in [libc::AF_INET as u8, libc::AF_INET6 as u8] {
        #[repr(C)]
        struct Request {
            head: NlMsgHdr,
            body: InetDiagReqV2,
        }
        let req = Request {
            head: NlMsgHdr {
                len: size_of::<Request>() as u32,
                kind: SOCK_DIAG_BY_FAMILY,
                flags: (libc::NLM_F_REQUEST | libc::NLM_F_DUMP) as u16,
                seq: 1,
                pid: 0,
            },
            body: InetDiagReqV2 {
                family,
                protocol: libc::IPPROTO_TCP as u8,
                states: 1 << TCP_LISTEN,
                ..InetDiagReqV2::default()
            },
        };
        // SAFETY: sending our plain-data request from its own memory.
        let sent = unsafe { libc::send(raw, (&raw const req).cast(), size_of::<Request>(), 0) };
        if sent < 0 {
            return Err(io::Error::last_os_error());
        }
        let mut buf = vec![0u8; 32 * 1024];
        'reading: loop {
            // SAFETY: receiving into our buffer.
            let n = unsafe { libc::recv(raw, buf.as_mut_ptr().cast(), buf.len(), 0) };
            if n < 0 {
                return Err(io::Error::last_os_error());
            }
            let mut at = 0usize;
            let n = n as usize;
            while at + size_of::<NlMsgHdr>() <= n {
                // SAFETY: a header's bytes are inside what was received.
                let head: NlMsgHdr =
                    unsafe { buf.as_ptr().add(at).cast::<NlMsgHdr>().read_unaligned() };
                let len = head.len as usize;
                if len < size_of::<NlMsgHdr>() || at + len > n {
                    break 'reading;
                }
                match head.kind {
                    NLMSG_DONE => break 'reading,
                    NLMSG_ERROR => {
                        return Err(io::Error::other("sock_diag answered with an error"));
                    }
                    _ if len >= size_of::<NlMsgHdr>() + size_of::<InetDiagMsg>() => {
                        // SAFETY: the message's bytes are inside what was received.
                        let msg: InetDiagMsg = unsafe {
                            buf.as_ptr()
                                .add(at + size_of::<NlMsgHdr>())
                                .cast::<InetDiagMsg>()
                                .read_unaligned()
                        };
                        let q: &mut AcceptQueue =
                            out.entry(u16::from_be(msg.id.sport)).or_default();
                        q.queued += u64::from(msg.rqueue);
                        q.limit += u64::from(msg.wqueue);
                    }
                    _ => {}
                }
                at += len.div_ceil(4) * 4;
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::net::{TcpListener, TcpStream};

    use super::*;

    #[test]
    fn a_listener_that_does_not_accept_shows_its_queue() {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = l.local_addr().expect("addr").port();
        let held: Vec<TcpStream> = (0..3)
            .map(|_| TcpStream::connect(("127.0.0.1", port)).expect("connect"))
            .collect();
        // The handshakes complete in the kernel; nobody accepts them.
        std::thread::sleep(std::time::Duration::from_millis(100));
        let q = accept_queues().expect("sock_diag")[&port];
        assert_eq!(q.queued, 3);
        assert!(q.limit >= 128, "the backlog std gives: {}", q.limit);
        drop(held);
    }
}
