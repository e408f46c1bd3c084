//! The programs' maps, read and written from user space: counters,
//! latency, the flow table, interface and listener slots.
use std::os::fd::AsFd as _;

use anyhow::{Context as _, Result, anyhow};
use aya::{
    maps::{Array, IterableMap as _, MapData, PerCpuArray, PerCpuValues},
    programs::{TestRun as _, TestRunOptions, Xdp},
};
use handshake_common::{
    counters::{
        COUNTERS_LEN, COUNTERS_PER_IFACE, Counter, Direction, Family, MAX_IFINDEX, counter_index,
    },
    expire::{EXPIRED, ExpireRequest},
    flow::{FlowKey, FlowState},
    histogram::LATENCY_LEN,
    listener::{ListenerCounters, MAX_LISTENERS, OTHER_PORT, PORTS},
    map_names,
    pending::PENDING_SLOTS,
    program_names::EXPIRE,
    table::{self, Bucket},
};

use super::{
    batch,
    mapped::MappedBuckets,
    probe::{Probe, map_data, program},
    readers::{CounterReader, FlowReader, read_listeners, sum_per_cpu},
};

/// [`Probe::fill_flow_table`] on any handle of a flow table (a pinned one,
/// say) whose hash seed is `seed`.
pub fn fill_flow_table<T: std::borrow::BorrowMut<MapData>>(
    array: &mut Array<T, Bucket>,
    seed: u64,
    flows: impl Iterator<Item = (FlowKey, FlowState)>,
    want: usize,
) -> Result<usize> {
    let buckets = array.len();
    let mut table = vec![Bucket::default(); buckets as usize];
    let mut placed = 0;
    for (key, state) in flows {
        if placed == want {
            break;
        }
        let place = table::place(table::flow_hash(&key, seed), buckets - 1);
        let index = place.buckets.map(|b| b as usize);
        // As the programs place a new flow, but never evicting one.
        let chosen = table::way_for_new_flow(
            [&table[index[0]], &table[index[1]]],
            table::WAYS,
            core::convert::identity,
        )
        .filter(|&(b, i)| table[index[b]].tags[i] == table::EMPTY);
        if let Some((b, i)) = chosen {
            table[index[b]].set_way(
                i,
                table::Way {
                    tag: place.tag,
                    key,
                    state,
                },
            );
            placed += 1;
        }
    }
    for (index, bucket) in table.iter().enumerate() {
        if bucket.any_occupied() {
            array.set(index as u32, *bucket, 0)?;
        }
    }
    Ok(placed)
}

impl Probe {
    /// Zeroes the counters of an interface slot, before it is given to an
    /// interface (a slot freed by one that vanished keeps its old counts).
    pub fn zero_iface_slot(&mut self, slot: u32) -> Result<()> {
        let cpus = self.cpus;
        let map = self
            .ebpf
            .map_mut(map_names::COUNTERS)
            .ok_or_else(|| anyhow!("map COUNTERS missing"))?;
        let mut counters: PerCpuArray<_, u64> = PerCpuArray::try_from(map)?;
        let first = counter_index(slot, Family::Ipv4, Direction::Inbound, Counter::ALL[0]);
        for i in first..first + COUNTERS_PER_IFACE {
            counters.set(i, PerCpuValues::try_from(vec![0u64; cpus])?, 0)?;
        }
        Ok(())
    }

    /// The `COUNTERS` array summed over CPUs (see `handshake_common::counters`).
    pub fn counters(&self) -> Result<Vec<u64>> {
        let map = map_data(&self.ebpf, map_names::COUNTERS)?;
        sum_per_cpu(
            map.fd().as_fd(),
            self.cpus,
            map_names::COUNTERS,
            COUNTERS_LEN,
        )
    }

    /// The `LATENCY` array summed over CPUs (see `handshake_common::histogram`).
    pub fn latency(&self) -> Result<Vec<u64>> {
        let map = map_data(&self.ebpf, map_names::LATENCY)?;
        sum_per_cpu(map.fd().as_fd(), self.cpus, map_names::LATENCY, LATENCY_LEN)
    }

    /// Second handles on the counter maps, for scrapes that must not wait
    /// for whatever guards the [`Probe`] (attaching to new interfaces).
    pub fn counter_reader(&self) -> Result<CounterReader> {
        let dup = |name: &str| -> Result<std::os::fd::OwnedFd> {
            Ok(map_data(&self.ebpf, name)?
                .fd()
                .as_fd()
                .try_clone_to_owned()?)
        };
        Ok(CounterReader {
            counters: dup(map_names::COUNTERS)?,
            latency: dup(map_names::LATENCY)?,
            listeners: dup(map_names::LISTENERS)?,
            cpus: self.cpus,
        })
    }

    /// The tracked ports and their slots.
    pub fn listener_slots(&self) -> Vec<(u16, u32)> {
        self.listener_slots.clone()
    }

    /// Every handshake in progress, read in place.
    pub fn flows(&self) -> Result<Vec<(FlowKey, FlowState)>> {
        let mut out = Vec::new();
        self.flow_reader()?.for_each(|k, s| out.push((*k, *s)))?;
        Ok(out)
    }

    /// The flow table's hash seed.
    pub fn flow_seed(&self) -> Result<u64> {
        let map = self
            .ebpf
            .map(map_names::FLOW_SEED)
            .ok_or_else(|| anyhow!("map FLOW_SEED missing"))?;
        Ok(Array::<_, u64>::try_from(map)?.get(&0, 0)?)
    }

    /// Fills an empty flow table with flows from `flows` as the kernel
    /// would place them, skipping those whose bucket is full, until `want`
    /// are placed (benchmarks fill the table this way). Returns how many were.
    pub fn fill_flow_table(
        &mut self,
        flows: impl Iterator<Item = (FlowKey, FlowState)>,
        want: usize,
    ) -> Result<usize> {
        let seed = self.flow_seed()?;
        let map = self
            .ebpf
            .map_mut(map_names::FLOWS)
            .ok_or_else(|| anyhow!("map FLOWS missing"))?;
        fill_flow_table(&mut Array::<_, Bucket>::try_from(map)?, seed, flows, want)
    }

    /// Counts the handshake `key` as a timeout and leaves a tombstone, if it
    /// still holds the attempt started at `syn_ns` and is in progress; true
    /// if it did.
    pub fn expire(&mut self, key: &FlowKey, syn_ns: u64) -> Result<bool> {
        self.run_expire(ExpireRequest {
            key: *key,
            syn_ns,
            ..ExpireRequest::default()
        })
    }

    /// Deletes the tombstone `key` (of the attempt started at `syn_ns`);
    /// true if it did.
    pub fn forget(&mut self, key: &FlowKey, syn_ns: u64) -> Result<bool> {
        self.run_expire(ExpireRequest {
            key: *key,
            syn_ns,
            forget: 1,
            ..ExpireRequest::default()
        })
    }

    fn run_expire(&mut self, request: ExpireRequest) -> Result<bool> {
        let request = request.to_bytes();
        let options = TestRunOptions {
            data_in: Some(&request),
            ..TestRunOptions::default()
        };
        let result = program::<Xdp>(&mut self.ebpf, EXPIRE)?
            .test_run(options)
            .context("running the expire program")?;
        Ok(result.return_value == EXPIRED)
    }

    /// Gives interface `ifindex` its own counters, in `slot`
    /// (1..IFACE_SLOTS; 0 is "other"). ifindexes from MAX_IFINDEX up cannot
    /// have one.
    pub fn set_iface_slot(&mut self, ifindex: u32, slot: u32) -> Result<()> {
        anyhow::ensure!(
            ifindex < MAX_IFINDEX,
            "ifindex {ifindex} is past the slot table"
        );
        self.set_array(map_names::IFACES, ifindex, slot)
    }

    /// (ifindex, slot) of every interface with a slot of its own.
    pub fn iface_slots(&self) -> Result<Vec<(u32, u32)>> {
        let map = map_data(&self.ebpf, map_names::IFACES)?;
        let mut out = Vec::new();
        batch::lookup_all(map.fd().as_fd(), 4, 4, MAX_IFINDEX, |k, v| {
            let slot = u32::from_ne_bytes(v.try_into().unwrap_or_default());
            if slot != 0 {
                out.push((u32::from_ne_bytes(k.try_into().unwrap_or_default()), slot));
            }
        })?;
        Ok(out)
    }

    /// Sets the time the programs see when loaded with `clock_from_map`.
    pub fn set_replay_clock(&mut self, ns: u64) -> Result<()> {
        self.set_array(map_names::REPLAY_CLOCK, 0, ns)
    }

    /// A handle for scanning the flow table on another thread.
    pub fn flow_reader(&self) -> Result<FlowReader> {
        let map = map_data(&self.ebpf, map_names::FLOWS)?;
        Ok(FlowReader {
            table: MappedBuckets::read_only(map.fd(), map.info()?.max_entries())?,
        })
    }

    /// (port, slot) of every port with a listener slot of its own, from the map.
    pub(super) fn read_listener_slots(&self) -> Result<Vec<(u16, u32)>> {
        let map = map_data(&self.ebpf, map_names::LISTENER_SLOTS)?;
        let mut out = Vec::new();
        batch::lookup_all(map.fd().as_fd(), 4, 4, PORTS, |k, v| {
            let slot = u32::from_ne_bytes(v.try_into().unwrap_or_default());
            if slot != 0 {
                out.push((
                    u32::from_ne_bytes(k.try_into().unwrap_or_default()) as u16,
                    slot,
                ));
            }
        })?;
        Ok(out)
    }

    /// Gives each of `ports` its own funnel (a zeroed slot; ports already
    /// tracked keep theirs and their counts). Inbound handshakes to any other
    /// port are counted under [`OTHER_PORT`]; past [`MAX_LISTENERS`] - 1
    /// ports, new ones are too.
    pub fn track_listener_ports(&mut self, ports: &[u16]) -> Result<()> {
        let current = self.listener_slots.clone();
        let mut used: std::collections::BTreeSet<u32> = current.iter().map(|(_, s)| *s).collect();
        let cpus = self.cpus;
        for port in ports.iter().copied().filter(|p| *p != OTHER_PORT) {
            if current.iter().any(|(p, _)| *p == port) {
                continue;
            }
            let Some(slot) = (1..MAX_LISTENERS).find(|s| !used.contains(s)) else {
                log::warn!(
                    "listener port {port}: all {MAX_LISTENERS} slots are taken: counted as port=\"other\""
                );
                continue;
            };
            used.insert(slot);
            let map = self
                .ebpf
                .map_mut(map_names::LISTENERS)
                .ok_or_else(|| anyhow!("map LISTENERS missing"))?;
            let mut funnels: PerCpuArray<_, ListenerCounters> = PerCpuArray::try_from(map)?;
            funnels.set(
                slot,
                PerCpuValues::try_from(vec![ListenerCounters::default(); cpus])?,
                0,
            )?;
            let map = self
                .ebpf
                .map_mut(map_names::LISTENER_SLOTS)
                .ok_or_else(|| anyhow!("map LISTENER_SLOTS missing"))?;
            let mut slots: Array<_, u32> = Array::try_from(map)?;
            slots
                .set(u32::from(port), slot, 0)
                .with_context(|| format!("cannot track listener port {port}"))?;
            self.listener_slots.push((port, slot));
        }
        Ok(())
    }

    /// Takes `port`'s own funnel away: it is counted as "other" from now
    /// on, and its slot is free for another port.
    pub fn untrack_listener_port(&mut self, port: u16) -> Result<()> {
        let map = self
            .ebpf
            .map_mut(map_names::LISTENER_SLOTS)
            .ok_or_else(|| anyhow!("map LISTENER_SLOTS missing"))?;
        let mut slots: Array<_, u32> = Array::try_from(map)?;
        slots
            .set(u32::from(port), 0, 0)
            .with_context(|| format!("cannot untrack listener port {port}"))?;
        self.listener_slots.retain(|(p, _)| *p != port);
        Ok(())
    }

    /// The ports with a listener slot of their own.
    pub fn listener_ports(&self) -> Vec<u16> {
        self.listener_slots.iter().map(|(p, _)| *p).collect()
    }

    /// Each tracked port's funnel, summed over CPUs, sorted by port; port 0
    /// is every other port.
    pub fn listeners(&self) -> Result<Vec<(u16, ListenerCounters)>> {
        let map = map_data(&self.ebpf, map_names::LISTENERS)?;
        read_listeners(map.fd().as_fd(), self.cpus, &self.listener_slots)
    }

    /// Sum of the pending filter's slots: flows the kernel believes are in
    /// syn_received (see `handshake_common::pending`).
    pub fn pending_total(&self) -> Result<u64> {
        let map = self
            .ebpf
            .map(map_names::PENDING)
            .ok_or_else(|| anyhow!("map PENDING missing"))?;
        let pending: Array<_, u64> = Array::try_from(map)?;
        let mut total = 0u64;
        batch::lookup_all(pending.map().fd().as_fd(), 4, 8, PENDING_SLOTS, |_, v| {
            total = total.wrapping_add(u64::from_ne_bytes(v.try_into().unwrap_or_default()));
        })?;
        Ok(total)
    }
}
