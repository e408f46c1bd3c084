//! The benchmarks' object: the agent's programs and, with the `bench`
//! feature of handshake-ebpf, the benchmarks' own (empty baselines, frame
//! steppers, parts of a new flow alone), built by this crate's build.rs. The
//! agent's object carries none of them.
use anyhow::{Context as _, Result, anyhow};
use aya::{
    maps::Array,
    programs::{SchedClassifier, Xdp},
};
use handshake_user::probe::{LoadOptions, Probe};

/// The compiled object with the benchmark programs.
pub static BENCH_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/handshake"));

/// The benchmark programs and their map, by name (src/bench.rs of
/// handshake-ebpf).
pub mod names {
    /// Empty programs, the baselines.
    pub const BASELINE_XDP: &str = "baseline_xdp";
    pub const BASELINE_TC: &str = "baseline_tc";
    /// Step an address, then observe (a new flow every run).
    pub const BENCH_STEPPED_INGRESS: &str = "bench_stepped_ingress";
    pub const BENCH_STEPPED_EGRESS: &str = "bench_stepped_egress";
    /// The step alone, the baselines of the two above.
    pub const BENCH_STEP_XDP: &str = "bench_step_xdp";
    pub const BENCH_STEP_TC: &str = "bench_step_tc";
    /// Step, parse, and the flow table's lookup and insert only.
    pub const BENCH_INSERT_ONLY: &str = "bench_insert_only";
    /// The clock read alone, as a new flow reads it.
    pub const BENCH_CLOCK_XDP: &str = "bench_clock_xdp";
    /// The byte offset the steppers step.
    pub const BENCH_STEP: &str = "BENCH_STEP";
}

/// Loads the benchmarks' object.
pub fn load(options: &LoadOptions) -> Result<Probe> {
    Probe::load_object(BENCH_OBJECT, options)
}

/// Loads the benchmarks' object with the flow table the agent had before
/// two-choice placement: one bucket per key, four ways used of each, and
/// twice the buckets, so that the capacity is `options.flow_table_size`.
/// B4 measures it beside today's.
pub fn load_earlier_table(options: &LoadOptions) -> Result<Probe> {
    Probe::load_object_with(
        BENCH_OBJECT,
        &LoadOptions {
            flow_table_size: options.flow_table_size.saturating_mul(2),
            ..*options
        },
        &[("BENCH_TABLE_CHOICES", 1), ("BENCH_TABLE_WAYS", 4)],
    )
}

/// The benchmark programs of a [`Probe`] loaded from [`BENCH_OBJECT`].
pub trait BenchPrograms {
    /// A never-attached XDP program by name, loaded on first use.
    fn bench_xdp(&mut self, name: &str) -> Result<&mut Xdp>;
    /// A never-attached TC program by name, loaded on first use.
    fn bench_tc(&mut self, name: &str) -> Result<&mut SchedClassifier>;
    /// The empty XDP program.
    fn baseline_xdp(&mut self) -> Result<&mut Xdp> {
        self.bench_xdp(names::BASELINE_XDP)
    }
    /// The empty TC program.
    fn baseline_tc(&mut self) -> Result<&mut SchedClassifier> {
        self.bench_tc(names::BASELINE_TC)
    }
    /// Sets the byte offset the stepping programs step.
    fn set_bench_step(&mut self, offset: u32) -> Result<()>;
}

impl BenchPrograms for Probe {
    fn bench_xdp(&mut self, name: &str) -> Result<&mut Xdp> {
        let program = self
            .ebpf_mut()
            .program_mut(name)
            .ok_or_else(|| anyhow!("program {name} missing: not the benchmarks' object?"))?;
        let xdp: &mut Xdp = program.try_into()?;
        if xdp.fd().is_err() {
            xdp.load().with_context(|| format!("load {name}"))?;
        }
        Ok(xdp)
    }

    fn bench_tc(&mut self, name: &str) -> Result<&mut SchedClassifier> {
        let program = self
            .ebpf_mut()
            .program_mut(name)
            .ok_or_else(|| anyhow!("program {name} missing: not the benchmarks' object?"))?;
        let tc: &mut SchedClassifier = program.try_into()?;
        if tc.fd().is_err() {
            tc.load().with_context(|| format!("load {name}"))?;
        }
        Ok(tc)
    }

    fn set_bench_step(&mut self, offset: u32) -> Result<()> {
        let map = self
            .ebpf_mut()
            .map_mut(names::BENCH_STEP)
            .ok_or_else(|| anyhow!("map BENCH_STEP missing: not the benchmarks' object?"))?;
        Array::<_, u32>::try_from(map)?.set(0, offset, 0)?;
        Ok(())
    }
}
