//! The flow table's buckets mapped into this process. The array is
//! mmapable, so a scan (or a test's reset) is a walk over the kernel's own
//! memory, with no syscall per bucket or per batch.

use std::{os::fd::AsRawFd as _, ptr::NonNull};

use anyhow::{Context as _, Result};
use handshake_common::table::Bucket;

/// A shared mapping of a flow table's buckets, unmapped when dropped.
pub struct MappedBuckets {
    base: NonNull<Bucket>,
    buckets: usize,
    /// Bytes mapped: the buckets, rounded up to whole pages.
    bytes: usize,
}

// SAFETY: the mapping is shared memory of this process, valid until `Drop`
// unmaps it, and tied to no thread; every access through it is a volatile
// read or write of a raw pointer, as the programs on other CPUs may write
// the same buckets at any moment.
unsafe impl Send for MappedBuckets {}

impl MappedBuckets {
    /// Maps the `buckets` buckets of the flow table `fd`, read-only.
    pub fn read_only(fd: &impl std::os::fd::AsFd, buckets: u32) -> Result<Self> {
        Self::map(fd, buckets, libc::PROT_READ)
    }

    /// Maps the `buckets` buckets of the flow table `fd`, writable.
    pub fn writable(fd: &impl std::os::fd::AsFd, buckets: u32) -> Result<Self> {
        Self::map(fd, buckets, libc::PROT_READ | libc::PROT_WRITE)
    }

    fn map(fd: &impl std::os::fd::AsFd, buckets: u32, prot: libc::c_int) -> Result<Self> {
        let buckets = buckets as usize;
        let bytes = (buckets * size_of::<Bucket>()).next_multiple_of(4096);
        // SAFETY: maps the array's values shared; the kernel keeps the
        // memory alive while it is mapped; `Drop` unmaps it.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                bytes,
                prot,
                libc::MAP_SHARED,
                fd.as_fd().as_raw_fd(),
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error()).context("mapping the flow table");
        }
        let base =
            NonNull::new(base.cast::<Bucket>()).context("mapping the flow table: null mapping")?;
        Ok(Self {
            base,
            buckets,
            bytes,
        })
    }

    /// Buckets mapped.
    pub fn len(&self) -> usize {
        self.buckets
    }

    /// True if the table has no buckets.
    pub fn is_empty(&self) -> bool {
        self.buckets == 0
    }

    /// Bucket `i` (below [`MappedBuckets::len`]). A raw pointer: the
    /// programs may be writing the bucket at any moment, so read it (and,
    /// in a writable mapping, write it) with volatile accesses.
    pub fn bucket(&self, i: usize) -> *mut Bucket {
        assert!(i < self.buckets, "bucket {i} of {}", self.buckets);
        // SAFETY: bucket `i` lies inside the mapping.
        unsafe { self.base.as_ptr().add(i) }
    }
}

impl Drop for MappedBuckets {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `map`, not used after this.
        unsafe { libc::munmap(self.base.as_ptr().cast(), self.bytes) };
    }
}
