//! The kernel's view of a frame: `data..data_end`, with the one bounds check
//! per read that the verifier needs to see.
use handshake_common::parse::PacketView;

#[derive(Clone, Copy)]
pub struct Frame {
    pub start: usize,
    pub end: usize,
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
