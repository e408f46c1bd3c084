//! BPF_MAP_LOOKUP_BATCH, which aya 0.14 does not wrap: one syscall reads
//! thousands of entries, where an iteration costs two syscalls per entry.
//! The agent reads its counters and the small tables with it, so the work
//! per scrape stays a handful of syscalls. (The flow table, an mmapable
//! array, is read in place: see `probe::FlowReader`.)
use std::{
    io,
    os::fd::{AsRawFd as _, BorrowedFd},
};

const BPF_MAP_LOOKUP_BATCH: libc::c_long = 24;

/// `union bpf_attr`'s `batch` member.
#[repr(C)]
#[derive(Default)]
struct BatchAttr {
    in_batch: u64,
    out_batch: u64,
    keys: u64,
    values: u64,
    count: u32,
    map_fd: u32,
    elem_flags: u64,
    flags: u64,
}

/// Reads every entry of the map behind `fd`, `chunk` at a time, calling
/// `each(key, value)` with the raw bytes. For per-CPU maps, `value_size` is
/// the whole per-CPU row: `round_up(size, 8) * cpus`.
pub fn lookup_all(
    fd: BorrowedFd<'_>,
    key_size: usize,
    value_size: usize,
    mut chunk: u32,
    mut each: impl FnMut(&[u8], &[u8]),
) -> io::Result<()> {
    // Batch tokens: opaque, at most a key's size (the kernel's hash maps use
    // a u32 bucket number, arrays an index).
    let token_size = key_size.max(8);
    let mut in_token = vec![0u8; token_size];
    let mut out_token = vec![0u8; token_size];
    let mut first = true;
    // One pair of buffers for every batch: fresh ones would page-fault in
    // on every call.
    let mut keys = Vec::new();
    let mut values = Vec::new();
    loop {
        keys.resize(key_size * chunk as usize, 0);
        values.resize(value_size * chunk as usize, 0);
        let mut attr = BatchAttr {
            in_batch: if first { 0 } else { in_token.as_ptr() as u64 },
            out_batch: out_token.as_mut_ptr() as u64,
            keys: keys.as_mut_ptr() as u64,
            values: values.as_mut_ptr() as u64,
            count: chunk,
            map_fd: fd.as_raw_fd() as u32,
            ..BatchAttr::default()
        };
        // SAFETY: the attr points at buffers sized for `chunk` entries, which
        // outlive the call; the kernel writes at most `count` of each.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                BPF_MAP_LOOKUP_BATCH,
                &mut attr as *mut BatchAttr,
                size_of::<BatchAttr>(),
            )
        };
        let err = (rc < 0).then(io::Error::last_os_error);
        match err.as_ref().and_then(io::Error::raw_os_error) {
            // A hash bucket holds more entries than fit: retry, bigger.
            Some(libc::ENOSPC) => {
                chunk *= 2;
                continue;
            }
            Some(libc::ENOENT) | None => {}
            Some(_) => return Err(err.unwrap_or_else(io::Error::last_os_error)),
        }
        let filled = attr.count as usize;
        for i in 0..filled {
            each(
                &keys[i * key_size..(i + 1) * key_size],
                &values[i * value_size..(i + 1) * value_size],
            );
        }
        if err.is_some() {
            // ENOENT: that was the last batch.
            return Ok(());
        }
        std::mem::swap(&mut in_token, &mut out_token);
        first = false;
    }
}
