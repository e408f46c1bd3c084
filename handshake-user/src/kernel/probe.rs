//! The loaded kernel programs: load, attach, and read and write the maps.
use std::{
    os::fd::AsFd as _,
    path::{Path, PathBuf},
};

use anyhow::{Context as _, Result, anyhow};
use aya::{
    Ebpf, EbpfLoader,
    maps::{Array, IterableMap as _, Map, MapData, PerCpuArray, PerCpuValues},
    programs::{
        SchedClassifier, TcAttachType, TestRun as _, TestRunOptions, Xdp, XdpMode, links::FdLink,
        tc::SchedClassifierLink, xdp::XdpLink,
    },
};
use handshake_common::{
    counters::{
        COUNTERS_LEN, COUNTERS_PER_IFACE, Counter, Direction, Family, MAX_IFINDEX, counter_index,
    },
    expire::{EXPIRED, ExpireRequest},
    flow::{FlowKey, FlowState},
    global_names,
    histogram::LATENCY_LEN,
    listener::{ListenerCounters, MAX_LISTENERS, OTHER_PORT, PORTS},
    map_names,
    pending::PENDING_SLOTS,
    program_names::{EXPIRE, TC_EGRESS, TC_INGRESS, XDP_INGRESS},
    table::{self, Bucket, WAYS},
};

pub use super::readers::{CounterReader, FlowReader};
use super::{
    mapped::MappedBuckets,
    pins::check_pins,
    readers::{read_listeners, sum_per_cpu},
};
use crate::{
    batch,
    ingress::{Fallback, IngressPlan},
    interfaces::Interface,
};

/// The compiled kernel programs, built from source by build.rs.
pub static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/handshake"));

/// The maps whose contents outlive an agent when pinned: everything but the
/// replay clock.
pub const PINNED_MAPS: &[&str] = &[
    map_names::FLOWS,
    map_names::FLOW_SEED,
    map_names::COUNTERS,
    map_names::LATENCY,
    map_names::FLOOD_GUARD,
    map_names::PENDING,
    map_names::LISTENERS,
    map_names::LISTENER_SLOTS,
    map_names::IFACES,
];

/// Load-time settings of the kernel programs.
#[derive(Debug, Clone, Copy)]
pub struct LoadOptions {
    /// Flows the table holds at least (see `handshake_common::table::buckets_for`).
    pub flow_table_size: u32,
    /// New flow-table entries allowed per CPU per window; u64::MAX (the
    /// default) is no budget, and the kernel skips the check.
    pub syn_insert_budget: u64,
    pub syn_insert_window_ns: u64,
    /// Offline replay: the programs read the time from `REPLAY_CLOCK`.
    pub clock_from_map: bool,
    /// The flow table's hash seed when the table is new; None: a random one.
    /// Replay and the tests fix it, so that which flows share a bucket (and
    /// so any eviction) is the same on every run.
    pub flow_seed: Option<u64>,
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self {
            flow_table_size: handshake_common::DEFAULT_FLOW_TABLE_SIZE,
            syn_insert_budget: u64::MAX,
            syn_insert_window_ns: 100_000_000,
            clock_from_map: false,
            flow_seed: None,
        }
    }
}

/// The ingress program's link, on whichever hook it went (for XDP, in the
/// mode it runs in).
pub enum IngressLink {
    Xdp(XdpLink, XdpMode),
    Tc(SchedClassifierLink),
}

impl IngressLink {
    /// Where the ingress program runs, in words: "TC", "XDP (native)", ...
    pub fn describe(&self) -> &'static str {
        match self {
            Self::Xdp(_, mode) => crate::ingress::describe(IngressPlan::Xdp {
                mode: *mode,
                fallback: Fallback::None,
            }),
            Self::Tc(_) => crate::ingress::describe(IngressPlan::Tc),
        }
    }
}

fn direction_name(at: TcAttachType) -> &'static str {
    if at == TcAttachType::Ingress {
        "ingress"
    } else {
        "egress"
    }
}

/// Our TC program for a direction: the ingress program's TC twin, or the
/// egress program.
fn tc_program_name(at: TcAttachType) -> &'static str {
    if at == TcAttachType::Ingress {
        TC_INGRESS
    } else {
        TC_EGRESS
    }
}

pub struct Probe {
    ebpf: Ebpf,
    cpus: usize,
    /// (port, slot) of the tracked listener ports: kept here so a scrape
    /// does not read the 65536-entry port array.
    listener_slots: Vec<(u16, u32)>,
}

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
        let bucket = &mut table[place.bucket as usize];
        if let Some(i) = bucket.tags.iter().position(|&t| t == table::EMPTY) {
            bucket.set_way(
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
        if bucket.any_live() {
            array.set(index as u32, *bucket, 0)?;
        }
    }
    Ok(placed)
}

fn map_data<'a>(ebpf: &'a Ebpf, name: &str) -> Result<&'a MapData> {
    match ebpf
        .map(name)
        .ok_or_else(|| anyhow!("map {name} missing from the object"))?
    {
        Map::Array(m)
        | Map::PerCpuArray(m)
        | Map::HashMap(m)
        | Map::LruHashMap(m)
        | Map::PerCpuHashMap(m) => Ok(m),
        _ => Err(anyhow!("map {name} has an unexpected type")),
    }
}

impl Probe {
    /// Loads the programs into the kernel (verifying them) without attaching.
    pub fn load(options: &LoadOptions) -> Result<Self> {
        Self::load_pinned(options, None)
    }

    /// As [`Probe::load`]; with `pin_dir`, the maps that hold state are
    /// pinned under `pin_dir/maps`, and reused if already there, so a
    /// restarted agent continues where the last one stopped.
    /// Loads `object` (another build of the programs: the benchmarks' one,
    /// with programs of their own), unpinned.
    pub fn load_object(object: &[u8], options: &LoadOptions) -> Result<Self> {
        Self::load_from(object, options, None)
    }

    pub fn load_pinned(options: &LoadOptions, pin_dir: Option<&Path>) -> Result<Self> {
        Self::load_from(OBJECT, options, pin_dir)
    }

    fn load_from(object: &[u8], options: &LoadOptions, pin_dir: Option<&Path>) -> Result<Self> {
        let clock_from_map = u8::from(options.clock_from_map);
        let mut loader = EbpfLoader::new();
        let pins: Vec<(&str, PathBuf)> = match pin_dir {
            Some(dir) => {
                let maps = dir.join("maps");
                std::fs::create_dir_all(&maps)
                    .with_context(|| format!("cannot create {}", maps.display()))?;
                PINNED_MAPS
                    .iter()
                    .map(|name| (*name, maps.join(name)))
                    .collect()
            }
            None => Vec::new(),
        };
        let buckets = table::buckets_for(options.flow_table_size);
        check_pins(&pins, buckets)?;
        for (name, path) in &pins {
            loader.map_pin_path(name, path.as_path());
        }
        let mut ebpf = loader
            .map_max_entries(map_names::FLOWS, buckets)
            .override_global(global_names::FLOW_BUCKET_MASK, &(buckets - 1), true)
            .override_global(
                global_names::SYN_INSERT_BUDGET,
                &options.syn_insert_budget,
                true,
            )
            .override_global(
                global_names::SYN_INSERT_WINDOW_NS,
                &options.syn_insert_window_ns,
                true,
            )
            .override_global(global_names::CLOCK_FROM_MAP, &clock_from_map, true)
            .load(object)
            .with_context(|| {
                format!(
                    "cannot load the eBPF object (its flow table alone takes {} MiB of kernel memory, which counts against a memory limit such as the unit's MemoryMax)",
                    (u64::from(buckets) * size_of::<Bucket>() as u64) >> 20
                )
            })?;
        program::<Xdp>(&mut ebpf, XDP_INGRESS)?
            .load()
            .context("the kernel rejected the XDP program")?;
        program::<SchedClassifier>(&mut ebpf, TC_EGRESS)?
            .load()
            .context("the kernel rejected the TC egress program")?;
        program::<SchedClassifier>(&mut ebpf, TC_INGRESS)?
            .load()
            .context("the kernel rejected the TC ingress program")?;
        program::<Xdp>(&mut ebpf, EXPIRE)?
            .load()
            .context("the kernel rejected the expire program")?;
        let cpus = aya::util::nr_cpus().map_err(|(what, e)| anyhow!("{what}: {e}"))?;
        let mut probe = Self {
            ebpf,
            cpus,
            listener_slots: Vec::new(),
        };
        let pinned_buckets = map_data(&probe.ebpf, map_names::FLOWS)?
            .info()?
            .max_entries();
        anyhow::ensure!(
            pinned_buckets == buckets,
            "the pinned flow table holds {} flows, --flow-table-size asks for {}: use the same size, or remove the pin directory",
            pinned_buckets as usize * WAYS,
            buckets as usize * WAYS
        );
        probe.seed_flow_table(options.flow_seed)?;
        // Pinned maps may already have ports from an earlier agent.
        probe.listener_slots = probe.read_listener_slots()?;
        Ok(probe)
    }

    /// Attaches the ingress program to `iface` as `plan` says; the link
    /// detaches when dropped, unless pinned.
    pub fn attach_ingress(&mut self, iface: &Interface, plan: IngressPlan) -> Result<IngressLink> {
        let (mode, fallback) = match plan {
            IngressPlan::Tc => {
                return self
                    .attach_tc(iface, TcAttachType::Ingress)
                    .map(IngressLink::Tc);
            }
            IngressPlan::Xdp { mode, fallback } => (mode, fallback),
        };
        let xdp = program::<Xdp>(&mut self.ebpf, XDP_INGRESS)?;
        let attached = match (xdp.attach_to_if_index(iface.index, mode), fallback) {
            (Ok(id), _) => Ok((id, mode)),
            // A driver with native XDP may still refuse it (virtio_net with
            // the host's GRO offloads on, too few queues, ...), and one
            // without it refuses driver mode; the kernel does not fall back
            // by itself.
            (Err(e), Fallback::Tc) => {
                log::info!("{}: native XDP refused ({e})", iface.name);
                return self
                    .attach_tc(iface, TcAttachType::Ingress)
                    .map(IngressLink::Tc);
            }
            (Err(e), Fallback::GenericXdp) => {
                log::info!("{}: native XDP refused ({e})", iface.name);
                xdp.attach_to_if_index(iface.index, XdpMode::Skb)
                    .map(|id| (id, XdpMode::Skb))
            }
            (Err(e), Fallback::None) => Err(e),
        };
        let (id, mode) = attached.map_err(|e| {
            let busy = matches!(&e, aya::programs::ProgramError::SyscallError(s) if s.io_error.raw_os_error() == Some(libc::EBUSY));
            if busy {
                anyhow!("cannot attach XDP to {}: another XDP program is attached (a handshake-monitor run with --pin-path? `handshake-monitor cleanup --pin-path DIR` removes it)", iface.name)
            } else {
                anyhow::Error::new(e).context(format!("cannot attach XDP to {}", iface.name))
            }
        })?;
        Ok(IngressLink::Xdp(xdp.take_link(id)?, mode))
    }

    /// Attaches the egress (TC, TCX where the kernel has it) program to `iface`.
    pub fn attach_egress(&mut self, iface: &Interface) -> Result<SchedClassifierLink> {
        self.attach_tc(iface, TcAttachType::Egress)
    }

    fn attach_tc(&mut self, iface: &Interface, at: TcAttachType) -> Result<SchedClassifierLink> {
        let tc = program::<SchedClassifier>(&mut self.ebpf, tc_program_name(at))?;
        let id = tc.attach(&iface.name, at).with_context(|| {
            format!("cannot attach TC {} to {}", direction_name(at), iface.name)
        })?;
        Ok(tc.take_link(id)?)
    }

    /// Points an XDP link that outlived its agent (pinned) at this agent's
    /// program: one atomic swap, no packet unobserved.
    pub fn adopt_xdp_ingress(&mut self, link: FdLink) -> Result<XdpLink> {
        let xdp = program::<Xdp>(&mut self.ebpf, XDP_INGRESS)?;
        let id = xdp
            .attach_to_link(XdpLink::try_from(link)?)
            .context("cannot adopt the pinned XDP link")?;
        Ok(xdp.take_link(id)?)
    }

    /// As [`Probe::adopt_xdp_ingress`], for a TCX link: the ingress program's
    /// or the egress program's.
    pub fn adopt_tc(&mut self, at: TcAttachType, link: FdLink) -> Result<SchedClassifierLink> {
        let tc = program::<SchedClassifier>(&mut self.ebpf, tc_program_name(at))?;
        let id = tc
            .attach_to_link(SchedClassifierLink::try_from(link)?)
            .with_context(|| format!("cannot adopt the pinned TC {} link", direction_name(at)))?;
        Ok(tc.take_link(id)?)
    }

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

    /// Gives a new flow table its hash seed (`seed`, or a random one); a
    /// pinned table keeps the seed its entries were placed with.
    fn seed_flow_table(&mut self, seed: Option<u64>) -> Result<()> {
        if self.flow_seed()? != 0 {
            return Ok(());
        }
        let mut seed = seed.unwrap_or(0);
        while seed == 0 {
            // SAFETY: fills the 8 bytes of `seed`.
            let n = unsafe { libc::getrandom((&raw mut seed).cast(), 8, 0) };
            anyhow::ensure!(n == 8, "getrandom: {}", std::io::Error::last_os_error());
        }
        self.set_array(map_names::FLOW_SEED, 0, seed)
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
    fn read_listener_slots(&self) -> Result<Vec<(u16, u32)>> {
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

    /// Writes `value` at `index` of the array map `name`.
    fn set_array<T: aya::Pod>(&mut self, name: &str, index: u32, value: T) -> Result<()> {
        let map = self
            .ebpf
            .map_mut(name)
            .ok_or_else(|| anyhow!("map {name} missing"))?;
        Array::<_, T>::try_from(map)?.set(index, value, 0)?;
        Ok(())
    }

    /// Mutable access to the object, for tools (benchmarks fill maps).
    pub fn ebpf_mut(&mut self) -> &mut Ebpf {
        &mut self.ebpf
    }

    /// The ingress program, e.g. to drive it with BPF_PROG_TEST_RUN.
    pub fn ingress_program(&mut self) -> Result<&mut Xdp> {
        program::<Xdp>(&mut self.ebpf, XDP_INGRESS)
    }

    /// The ingress program's TC twin, e.g. to drive it with BPF_PROG_TEST_RUN.
    pub fn tc_ingress_program(&mut self) -> Result<&mut SchedClassifier> {
        program::<SchedClassifier>(&mut self.ebpf, TC_INGRESS)
    }

    /// The egress program, e.g. to drive it with BPF_PROG_TEST_RUN.
    pub fn egress_program(&mut self) -> Result<&mut SchedClassifier> {
        program::<SchedClassifier>(&mut self.ebpf, TC_EGRESS)
    }

    /// The underlying object, for tests and tools.
    pub fn ebpf(&self) -> &Ebpf {
        &self.ebpf
    }
}

fn program<'a, P>(ebpf: &'a mut Ebpf, name: &str) -> Result<&'a mut P>
where
    &'a mut P: TryFrom<&'a mut aya::programs::Program, Error = aya::programs::ProgramError>,
{
    let program = ebpf
        .program_mut(name)
        .ok_or_else(|| anyhow!("program {name} missing from the object"))?;
    Ok(program.try_into()?)
}
