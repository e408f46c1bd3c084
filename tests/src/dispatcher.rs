//! Keeps XDP programs in the kernel's XDP dispatcher while a benchmark times
//! their test runs.
//!
//! BPF_PROG_TEST_RUN with `repeat` > 1 adds an XDP program to the dispatcher
//! (the trampoline of direct calls XDP programs run through) before its runs
//! and takes it out after. Each change rewrites the trampoline: some 0.25 to
//! 0.9 ms of CPU per call on this project's test machine, which is 0.3 to
//! 0.9 ns a run at a million runs and 8 to 27 ns at 32768, unevenly. A
//! program the dispatcher already holds costs neither: the kernel only counts
//! one more user. It holds every program attached to an interface, so
//! [`DispatcherHold::keep`] attaches the program, in generic mode, to an
//! interface of a namespace made for the purpose: veth ends, left down, that
//! carry no traffic.
use std::{
    os::fd::{AsFd as _, AsRawFd as _, FromRawFd as _, OwnedFd, RawFd},
    sync::Mutex,
};

use anyhow::{Result, bail};
use aya::programs::Xdp;

use crate::netns::{Netns, ifindex};

/// Interfaces for programs kept at once. A benchmark keeps one or two.
const SLOTS: usize = 4;

/// A namespace whose interfaces hold programs in the XDP dispatcher.
pub struct DispatcherHold {
    ns: Netns,
    free: Mutex<Vec<String>>,
}

/// One program kept in the dispatcher; detached (and its interface free
/// again) on drop.
pub struct Kept<'a> {
    hold: &'a DispatcherHold,
    dev: String,
    link: Option<OwnedFd>,
}

impl DispatcherHold {
    pub fn new() -> Result<Self> {
        let ns = Netns::new("dispatcher");
        let mut free = Vec::new();
        for i in 0..SLOTS / 2 {
            let (a, b) = (format!("hold{}", 2 * i), format!("hold{}", 2 * i + 1));
            ns.ip(&["link", "add", &a, "type", "veth", "peer", "name", &b])?;
            free.extend([a, b]);
        }
        Ok(Self { ns, free: Mutex::new(free) })
    }

    /// Keeps `prog` (loaded) in the dispatcher until the result is dropped.
    pub fn keep(&self, prog: &Xdp) -> Result<Kept<'_>> {
        let Some(dev) = self.free.lock().expect("free list").pop() else {
            bail!("more than {SLOTS} programs kept at once");
        };
        // The fd table is the process's: the number is valid on the
        // namespace's thread, which only needs to name the interface.
        let prog_fd = prog.fd()?.as_fd().as_raw_fd();
        let name = dev.clone();
        let link = self.ns.run(move || link_create_xdp_generic(prog_fd, ifindex(&name)));
        match link {
            Ok(link) => Ok(Kept { hold: self, dev, link: Some(link) }),
            Err(e) => {
                self.free.lock().expect("free list").push(dev);
                Err(e)
            }
        }
    }
}

impl Drop for Kept<'_> {
    fn drop(&mut self) {
        // Closing the link's fd detaches; the interface is then free.
        drop(self.link.take());
        self.hold.free.lock().expect("free list").push(std::mem::take(&mut self.dev));
    }
}

/// The part of `union bpf_attr` BPF_LINK_CREATE reads for an XDP link.
#[repr(C)]
struct LinkCreateAttr {
    prog_fd: u32,
    target_ifindex: u32,
    attach_type: u32,
    flags: u32,
}

const BPF_LINK_CREATE: libc::c_long = 28;
const BPF_XDP: u32 = 37;
const XDP_FLAGS_SKB_MODE: u32 = 1 << 1;

/// A BPF link attaching XDP program `prog_fd` to interface `ifindex` (of
/// the calling thread's namespace) in generic mode.
fn link_create_xdp_generic(prog_fd: RawFd, ifindex: u32) -> Result<OwnedFd> {
    if ifindex == 0 {
        bail!("no such interface");
    }
    let attr =
        LinkCreateAttr { prog_fd: prog_fd as u32, target_ifindex: ifindex, attach_type: BPF_XDP, flags: XDP_FLAGS_SKB_MODE };
    // SAFETY: `attr` is a valid, initialised prefix of bpf_attr for this
    // command, and its size is passed; the kernel zero-fills the rest.
    let fd = unsafe { libc::syscall(libc::SYS_bpf, BPF_LINK_CREATE, &raw const attr, size_of::<LinkCreateAttr>()) };
    if fd < 0 {
        bail!("BPF_LINK_CREATE (XDP, generic): {}", std::io::Error::last_os_error());
    }
    // SAFETY: a new fd the kernel just gave us, owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}
