//! The loaded kernel programs: load, attach, and read the maps.
use anyhow::{Context as _, Result, anyhow};
use aya::{
    Ebpf, EbpfLoader,
    maps::{Array, PerCpuArray, PerCpuHashMap, PerCpuValues},
    programs::{SchedClassifier, TcAttachType, Xdp, XdpMode},
};
use handshake_common::{
    counters::COUNTERS_LEN,
    histogram::LATENCY_LEN,
    listener::{ListenerCounters, OTHER_PORT},
    map_names,
    pending::PENDING_SLOTS,
    program_names::{TC_EGRESS, XDP_INGRESS},
};

use crate::{cli, interfaces::Interface};

/// `BPF_NOEXIST` for map updates: fail rather than replace.
const BPF_NOEXIST: u64 = 1;

/// The compiled kernel programs, built from source by build.rs.
pub static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/handshake"));

/// Load-time settings of the kernel programs.
#[derive(Debug, Clone, Copy)]
pub struct LoadOptions {
    pub flow_table_size: u32,
    /// New flow-table entries allowed per CPU per window.
    pub syn_insert_budget: u64,
    pub syn_insert_window_ns: u64,
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self {
            flow_table_size: handshake_common::DEFAULT_FLOW_TABLE_SIZE,
            syn_insert_budget: 16_384,
            syn_insert_window_ns: 100_000_000,
        }
    }
}

pub struct Probe {
    ebpf: Ebpf,
}

impl Probe {
    /// Loads both programs into the kernel (verifying them) without attaching.
    pub fn load(options: &LoadOptions) -> Result<Self> {
        let mut ebpf = EbpfLoader::new()
            .map_max_entries(map_names::FLOWS, options.flow_table_size)
            .override_global("SYN_INSERT_BUDGET", &options.syn_insert_budget, true)
            .override_global("SYN_INSERT_WINDOW_NS", &options.syn_insert_window_ns, true)
            .load(OBJECT)
            .context("cannot load the eBPF object")?;
        xdp(&mut ebpf)?.load().context("the kernel rejected the XDP program")?;
        tc(&mut ebpf)?.load().context("the kernel rejected the TC program")?;
        let mut probe = Self { ebpf };
        probe.track_listener_ports(&[OTHER_PORT])?;
        Ok(probe)
    }

    /// Gives each of `ports` its own funnel in the `LISTENERS` map (zeroed;
    /// ports already tracked keep their counts). Inbound handshakes to any
    /// other port are counted under [`OTHER_PORT`].
    pub fn track_listener_ports(&mut self, ports: &[u16]) -> Result<()> {
        let cpus = aya::util::nr_cpus().map_err(|(what, e)| anyhow!("{what}: {e}"))?;
        let map = self.ebpf.map_mut(map_names::LISTENERS).ok_or_else(|| anyhow!("map LISTENERS missing"))?;
        let mut listeners: PerCpuHashMap<_, u16, ListenerCounters> = PerCpuHashMap::try_from(map)?;
        for port in ports {
            let zeroed = PerCpuValues::try_from(vec![ListenerCounters::default(); cpus])?;
            // BPF_NOEXIST: keep the counts of a port already tracked.
            match listeners.insert(port, zeroed, BPF_NOEXIST) {
                Ok(()) => {}
                Err(aya::maps::MapError::SyscallError(e)) if e.io_error.raw_os_error() == Some(libc::EEXIST) => {}
                Err(e) => return Err(e).with_context(|| format!("cannot track listener port {port}")),
            }
        }
        Ok(())
    }

    /// Each tracked port's funnel, summed over CPUs, sorted by port.
    pub fn listeners(&self) -> Result<Vec<(u16, ListenerCounters)>> {
        let map = self.ebpf.map(map_names::LISTENERS).ok_or_else(|| anyhow!("map LISTENERS missing"))?;
        let listeners: PerCpuHashMap<_, u16, ListenerCounters> = PerCpuHashMap::try_from(map)?;
        let mut out = Vec::new();
        for entry in listeners.iter() {
            let (port, per_cpu) = entry?;
            let mut total = ListenerCounters::default();
            for c in per_cpu.iter() {
                total += *c;
            }
            out.push((port, total));
        }
        out.sort_by_key(|(p, _)| *p);
        Ok(out)
    }

    /// Sum of the pending filter's slots: flows the kernel believes are in
    /// syn_received (see `handshake_common::pending`).
    pub fn pending_total(&self) -> Result<u64> {
        let map = self.ebpf.map(map_names::PENDING).ok_or_else(|| anyhow!("map PENDING missing"))?;
        let pending: Array<_, u64> = Array::try_from(map)?;
        let mut total = 0u64;
        for i in 0..PENDING_SLOTS {
            total = total.wrapping_add(pending.get(&i, 0)?);
        }
        Ok(total)
    }

    /// Attaches the ingress (XDP) program to `iface`. Detached when the probe drops.
    pub fn attach_ingress(&mut self, iface: &Interface, mode: cli::XdpMode) -> Result<()> {
        let mode = match mode {
            // Flags 0: the kernel picks native where the driver has it,
            // generic otherwise (e.g. on lo).
            cli::XdpMode::Auto => XdpMode::Default,
            cli::XdpMode::Driver => XdpMode::Driver,
            cli::XdpMode::Skb => XdpMode::Skb,
        };
        xdp(&mut self.ebpf)?
            .attach_to_if_index(iface.index, mode)
            .with_context(|| format!("cannot attach XDP to {}", iface.name))?;
        Ok(())
    }

    /// Attaches the egress (TC, TCX where the kernel has it) program to `iface`.
    pub fn attach_egress(&mut self, iface: &Interface) -> Result<()> {
        tc(&mut self.ebpf)?
            .attach(&iface.name, TcAttachType::Egress)
            .with_context(|| format!("cannot attach TC egress to {}", iface.name))?;
        Ok(())
    }

    fn sum_per_cpu(&self, name: &str, len: u32) -> Result<Vec<u64>> {
        let map = self.ebpf.map(name).ok_or_else(|| anyhow!("map {name} missing from the object"))?;
        let array: PerCpuArray<_, u64> = PerCpuArray::try_from(map)?;
        (0..len)
            .map(|i| Ok(array.get(&i, 0).with_context(|| format!("reading {name}[{i}]"))?.iter().sum()))
            .collect()
    }

    /// The `COUNTERS` array summed over CPUs (see `handshake_common::counters`).
    pub fn counters(&self) -> Result<Vec<u64>> {
        self.sum_per_cpu(map_names::COUNTERS, COUNTERS_LEN)
    }

    /// The `LATENCY` array summed over CPUs (see `handshake_common::histogram`).
    pub fn latency(&self) -> Result<Vec<u64>> {
        self.sum_per_cpu(map_names::LATENCY, LATENCY_LEN)
    }

    /// The ingress program, e.g. to drive it with BPF_PROG_TEST_RUN.
    pub fn ingress_program(&mut self) -> Result<&mut Xdp> {
        xdp(&mut self.ebpf)
    }

    /// The egress program, e.g. to drive it with BPF_PROG_TEST_RUN.
    pub fn egress_program(&mut self) -> Result<&mut SchedClassifier> {
        tc(&mut self.ebpf)
    }

    /// The underlying maps, for tests and tools.
    pub fn ebpf(&self) -> &Ebpf {
        &self.ebpf
    }
}

fn xdp(ebpf: &mut Ebpf) -> Result<&mut Xdp> {
    let program = ebpf.program_mut(XDP_INGRESS).ok_or_else(|| anyhow!("program {XDP_INGRESS} missing"))?;
    Ok(program.try_into()?)
}

fn tc(ebpf: &mut Ebpf) -> Result<&mut SchedClassifier> {
    let program = ebpf.program_mut(TC_EGRESS).ok_or_else(|| anyhow!("program {TC_EGRESS} missing"))?;
    Ok(program.try_into()?)
}
