//! The loaded kernel programs: the loader (this file), their links
//! (`links`: attach and adopt) and their maps (`maps`: read and write).
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result, anyhow};
use aya::{
    Ebpf, EbpfLoader,
    maps::{Array, Map, MapData},
    programs::{SchedClassifier, Xdp},
};
use handshake_common::{
    global_names, map_names,
    program_names::{EXPIRE, TC_EGRESS, TC_INGRESS, XDP_INGRESS},
    table::{self, Bucket, WAYS},
};

use super::pins::check_pins;
pub use super::{
    links::IngressLink,
    maps::fill_flow_table,
    readers::{CounterReader, FlowReader},
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
    /// Diagnostic events from the programs (see [`Probe::follow_diagnostics`]).
    pub diagnostics: bool,
    /// Tap mode: a SYN-ACK seen before its SYN waits for it
    /// (`handshake_common::flow::Stage::SynAckFirst`).
    pub tap_reorder: bool,
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self {
            flow_table_size: handshake_common::DEFAULT_FLOW_TABLE_SIZE,
            syn_insert_budget: u64::MAX,
            syn_insert_window_ns: 100_000_000,
            clock_from_map: false,
            flow_seed: None,
            diagnostics: false,
            tap_reorder: false,
        }
    }
}

pub struct Probe {
    pub(super) ebpf: Ebpf,
    pub(super) cpus: usize,
    /// (port, slot) of the tracked listener ports: kept here so a scrape
    /// does not read the 65536-entry port array.
    pub(super) listener_slots: Vec<(u16, u32)>,
}

pub(super) fn map_data<'a>(ebpf: &'a Ebpf, name: &str) -> Result<&'a MapData> {
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
        Self::load_from(object, options, None, &[])
    }

    /// As [`Probe::load_object`], with `globals` of that build set first
    /// (the benchmarks' model of an earlier flow table).
    pub fn load_object_with(
        object: &[u8],
        options: &LoadOptions,
        globals: &[(&str, u32)],
    ) -> Result<Self> {
        Self::load_from(object, options, None, globals)
    }

    pub fn load_pinned(options: &LoadOptions, pin_dir: Option<&Path>) -> Result<Self> {
        Self::load_from(OBJECT, options, pin_dir, &[])
    }

    fn load_from(
        object: &[u8],
        options: &LoadOptions,
        pin_dir: Option<&Path>,
        globals: &[(&str, u32)],
    ) -> Result<Self> {
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
        for (name, value) in globals {
            loader.override_global(name, value, true);
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
            .override_global(
                global_names::DIAGNOSTICS,
                &u8::from(options.diagnostics),
                true,
            )
            .override_global(
                global_names::TAP_REORDER,
                &u8::from(options.tap_reorder),
                true,
            )
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

    /// Writes `value` at `index` of the array map `name`.
    pub(super) fn set_array<T: aya::Pod>(
        &mut self,
        name: &str,
        index: u32,
        value: T,
    ) -> Result<()> {
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

pub(super) fn program<'a, P>(ebpf: &'a mut Ebpf, name: &str) -> Result<&'a mut P>
where
    &'a mut P: TryFrom<&'a mut aya::programs::Program, Error = aya::programs::ProgramError>,
{
    let program = ebpf
        .program_mut(name)
        .ok_or_else(|| anyhow!("program {name} missing from the object"))?;
    Ok(program.try_into()?)
}
