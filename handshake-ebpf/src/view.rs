//! The kernel's view of a frame: `data..data_end`, with the one bounds check
//! per read that the verifier needs to see.
use aya_ebpf::programs::{TcContext, XdpContext};
use handshake_common::parse::PacketView;

#[derive(Clone, Copy)]
pub struct Frame {
    pub start: usize,
    pub end: usize,
}

impl Frame {
    /// An XDP program's frame.
    #[inline(always)]
    pub fn of_xdp(ctx: &XdpContext) -> Self {
        Self {
            start: ctx.data(),
            end: ctx.data_end(),
        }
    }

    /// A TC program's frame: the skb's linear part, as it is (see the
    /// programs' `linear_headers` for the rest).
    #[inline(always)]
    pub fn of_skb(ctx: &TcContext) -> Self {
        Self {
            start: ctx.data(),
            end: ctx.data_end(),
        }
    }
}

impl PacketView for Frame {
    #[inline(always)]
    fn read<T: Copy>(&self, offset: usize) -> Option<T> {
        let at = self.start + offset;
        if at + size_of::<T>() > self.end {
            return None;
        }
        // SAFETY: checked against data_end just above.
        Some(unsafe { (at as *const T).read_unaligned() })
    }
}
