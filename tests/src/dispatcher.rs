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
//! carry no traffic. A kept program stays kept (and loaded: the link holds
//! it) until it is the least recently kept of more than [`SLOTS`], or the
//! hold is dropped: the baseline and ours of a case are attached once, not
//! once a call (attaching and detaching each rewrite the dispatcher again,
//! which added some 8 s to a quick B1).
use std::{
    os::fd::{AsFd as _, AsRawFd as _, FromRawFd as _, OwnedFd, RawFd},
    sync::Mutex,
};

use anyhow::{Result, bail};
use aya::programs::Xdp;

use crate::netns::{Netns, ifindex};

/// Programs kept at once, one interface each: a pair of runs' two. With
/// two programs in it the dispatcher compares the program twice before
/// calling it, whichever of the two it is (a search tree of depth two),
/// so both sides of a pair pay alike, and the difference is unbiased;
/// three would put one a compare deeper than the other.
pub const SLOTS: usize = 2;

/// A namespace whose interfaces hold programs in the XDP dispatcher.
pub struct DispatcherHold {
    slots: Mutex<Slots>,
    // Dropped last: deleting the namespace deletes its interfaces.
    ns: Netns,
}

struct Slots {
    slots: Vec<Slot>,
    /// Counts `keep` calls: the order of use.
    calls: u64,
}

/// One interface, and the program attached to it, if any.
struct Slot {
    dev: String,
    held: Option<Held>,
}

struct Held {
    prog_id: u32,
    last_kept: u64,
    /// Closing it detaches the program.
    _link: OwnedFd,
}

impl DispatcherHold {
    pub fn new() -> Result<Self> {
        let ns = Netns::new("dispatcher");
        let mut slots = Vec::new();
        for i in 0..SLOTS / 2 {
            let (a, b) = (format!("hold{}", 2 * i), format!("hold{}", 2 * i + 1));
            ns.ip(&["link", "add", &a, "type", "veth", "peer", "name", &b])?;
            slots.extend([a, b].map(|dev| Slot { dev, held: None }));
        }
        Ok(Self {
            slots: Mutex::new(Slots { slots, calls: 0 }),
            ns,
        })
    }

    /// Makes sure `prog` (loaded) is in the dispatcher: attaches it unless
    /// it is kept already, in place of the least recently kept program if
    /// every interface has one.
    pub fn keep(&self, prog: &Xdp) -> Result<()> {
        let prog_id = prog.info()?.id();
        let mut guard = self.slots.lock().expect("slots");
        let state = &mut *guard;
        state.calls += 1;
        let now = state.calls;
        if let Some(held) = state
            .slots
            .iter_mut()
            .filter_map(|s| s.held.as_mut())
            .find(|h| h.prog_id == prog_id)
        {
            held.last_kept = now;
            return Ok(());
        }
        let slot = state
            .slots
            .iter_mut()
            .min_by_key(|s| s.held.as_ref().map_or(0, |h| h.last_kept))
            .expect("SLOTS > 0");
        // Detach the least recently kept first: one program per interface.
        slot.held = None;
        // The fd table is the process's: the number is valid on the
        // namespace's thread, which only needs to name the interface.
        let prog_fd = prog.fd()?.as_fd().as_raw_fd();
        let dev = slot.dev.clone();
        let link = self
            .ns
            .run(move || link_create_xdp_generic(prog_fd, ifindex(&dev)))?;
        slot.held = Some(Held {
            prog_id,
            last_kept: now,
            _link: link,
        });
        Ok(())
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
    let attr = LinkCreateAttr {
        prog_fd: prog_fd as u32,
        target_ifindex: ifindex,
        attach_type: BPF_XDP,
        flags: XDP_FLAGS_SKB_MODE,
    };
    // SAFETY: `attr` is a valid, initialised prefix of bpf_attr for this
    // command, and its size is passed; the kernel zero-fills the rest.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_LINK_CREATE,
            &raw const attr,
            size_of::<LinkCreateAttr>(),
        )
    };
    if fd < 0 {
        bail!(
            "BPF_LINK_CREATE (XDP, generic): {}",
            std::io::Error::last_os_error()
        );
    }
    // SAFETY: a new fd the kernel just gave us, owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}
