//! Second handles on the maps, for reading them without holding whatever
//! guards the [`super::probe::Probe`]: the counters for scrapes, the flow
//! table for the background scan.
use std::os::fd::AsFd as _;

use anyhow::{Context as _, Result};
use handshake_common::{
    counters::COUNTERS_LEN,
    flow::{FlowKey, FlowState},
    histogram::LATENCY_LEN,
    listener::{ListenerCounters, MAX_LISTENERS, OTHER_PORT},
    map_names,
    table::{self, Bucket, WAYS},
};

use crate::{batch, mapped::MappedBuckets};

/// Reads a per-CPU array whole, in one batch, summing over CPUs.
pub(crate) fn sum_per_cpu(
    fd: std::os::fd::BorrowedFd<'_>,
    cpus: usize,
    name: &str,
    len: u32,
) -> Result<Vec<u64>> {
    let mut out = vec![0u64; len as usize];
    let row = 8 * cpus;
    batch::lookup_all(fd, 4, row, len, |key, value| {
        let index = u32::from_ne_bytes(key.try_into().unwrap_or_default()) as usize;
        if let Some(slot) = out.get_mut(index) {
            *slot = value
                .chunks_exact(8)
                .map(|c| u64::from_ne_bytes(c.try_into().unwrap_or_default()))
                .sum();
        }
    })
    .with_context(|| format!("reading {name}"))?;
    Ok(out)
}

/// The funnels of the ports in `slots` (port, slot), summed over CPUs,
/// sorted by port; port 0 is every other port.
pub(crate) fn read_listeners(
    fd: std::os::fd::BorrowedFd<'_>,
    cpus: usize,
    slots: &[(u16, u32)],
) -> Result<Vec<(u16, ListenerCounters)>> {
    let mut ports = slots.to_vec();
    ports.push((OTHER_PORT, 0));
    let row = size_of::<ListenerCounters>().div_ceil(8) * 8;
    let mut by_slot = vec![ListenerCounters::default(); MAX_LISTENERS as usize];
    batch::lookup_all(fd, 4, row * cpus, MAX_LISTENERS, |k, v| {
        let slot = u32::from_ne_bytes(k.try_into().unwrap_or_default()) as usize;
        if let Some(total) = by_slot.get_mut(slot) {
            for cpu in v.chunks_exact(row) {
                // SAFETY: the kernel wrote a `#[repr(C)]` Pod value per CPU.
                *total += unsafe { cpu.as_ptr().cast::<ListenerCounters>().read_unaligned() };
            }
        }
    })?;
    let mut out: Vec<(u16, ListenerCounters)> = ports
        .into_iter()
        .map(|(p, s)| (p, by_slot.get(s as usize).copied().unwrap_or_default()))
        .collect();
    out.sort_by_key(|(p, _)| *p);
    Ok(out)
}

/// Second handles on the counter maps (see [`Probe::counter_reader`](super::probe::Probe::counter_reader)).
pub struct CounterReader {
    pub(crate) counters: std::os::fd::OwnedFd,
    pub(crate) latency: std::os::fd::OwnedFd,
    pub(crate) listeners: std::os::fd::OwnedFd,
    pub(crate) cpus: usize,
}

impl CounterReader {
    pub fn counters(&self) -> Result<Vec<u64>> {
        sum_per_cpu(
            self.counters.as_fd(),
            self.cpus,
            map_names::COUNTERS,
            COUNTERS_LEN,
        )
    }

    pub fn latency(&self) -> Result<Vec<u64>> {
        sum_per_cpu(
            self.latency.as_fd(),
            self.cpus,
            map_names::LATENCY,
            LATENCY_LEN,
        )
    }

    /// The funnels of the ports in `slots`, as [`Probe::listeners`](super::probe::Probe::listeners).
    pub fn listeners(&self, slots: &[(u16, u32)]) -> Result<Vec<(u16, ListenerCounters)>> {
        read_listeners(self.listeners.as_fd(), self.cpus, slots)
    }
}

/// A second handle on the flow table, for reading it in place without
/// holding whatever guards the [`Probe`](super::probe::Probe). It maps the table once: every scan
/// after the first walks pages already mapped, instead of faulting the whole
/// table in again (a million entries are some 25,000 pages).
pub struct FlowReader {
    pub(crate) table: MappedBuckets,
}

impl FlowReader {
    /// Streams every tracked flow to `each`.
    pub fn for_each(&self, mut each: impl FnMut(&FlowKey, &FlowState)) -> Result<()> {
        self.for_each_bucket(|bucket| {
            for (key, state) in bucket.occupied() {
                each(key, state);
            }
        })
    }

    /// Capacity of the flow table: its buckets' ways.
    pub fn capacity(&self) -> u32 {
        u32::try_from(self.table.len())
            .unwrap_or(u32::MAX)
            .saturating_mul(WAYS as u32)
    }

    /// Bucket `index`, read in place.
    pub fn bucket(&self, index: u32) -> Result<Bucket> {
        anyhow::ensure!((index as usize) < self.table.len(), "no bucket {index}");
        // SAFETY: a bucket of the mapping, read with a volatile read (the
        // programs may be writing it).
        Ok(unsafe { self.table.bucket(index as usize).read_volatile() })
    }

    /// Streams every bucket that holds a flow to `each`, read in place: the
    /// table is an mmapable array, so a scan is a walk over shared memory,
    /// with no syscall per entry or per batch, and an empty bucket costs
    /// only the reads of its tags.
    pub fn for_each_bucket(&self, mut each: impl FnMut(&Bucket)) -> Result<()> {
        let table = &self.table;
        for i in 0..table.len() {
            let at = table.bucket(i);
            // SAFETY: a bucket of the mapping; the programs may be writing
            // it, so it is read with volatile reads (a torn way is possible,
            // as with any read of a live table).
            let live = (0..WAYS)
                .any(|w| table::is_occupied(unsafe { (&raw const (*at).tags[w]).read_volatile() }));
            if live {
                // SAFETY: as above.
                each(&unsafe { at.read_volatile() });
            }
        }
        Ok(())
    }
}
