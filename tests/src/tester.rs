//! Runs the real, loaded programs on crafted frames with BPF_PROG_TEST_RUN
//! (no interface needed) and reads back their maps, in the manner of
//! katran's BpfTester.
use aya::{
    maps::Array,
    programs::{TestRun as _, TestRunOptions},
};
use handshake_common::{
    counters::{COUNTERS_LEN, Counter, Direction, Family, IFACE_SLOTS, counter_index},
    flow::{FlowKey, FlowState, Stage},
    histogram::{BUCKETS, Leg, base_index},
    map_names,
    table::Bucket,
};

use handshake_user::{
    mapped::MappedBuckets,
    probe::{LoadOptions, Probe},
};

/// The flow table's hash seed in tests (any fixed non-zero value).
pub const TEST_FLOW_SEED: u64 = 0x7465_7374_7365_6564;

/// XDP_PASS: the only verdict the ingress program may return.
pub const XDP_PASS: u32 = 2;
/// TC_ACT_UNSPEC (TCX_NEXT): the only verdict the egress program may return.
pub const TC_NEXT: i32 = -1;

pub struct Tester {
    probe: Probe,
}

impl Tester {
    /// Loads a fresh copy of the programs, with fresh maps.
    pub fn new() -> Self {
        Self::with(&LoadOptions::default())
    }

    /// Loads with `options`; unless they name one, with a fixed flow-table
    /// seed, so that which flows share a bucket is the same on every run.
    pub fn with(options: &LoadOptions) -> Self {
        Self {
            probe: Probe::load(&Self::seeded(options)).expect("load the programs (are we root?)"),
        }
    }

    /// As [`Tester::with`], from the benchmarks' object (the agent's
    /// programs and the benchmarks' own).
    pub fn bench_with(options: &LoadOptions) -> Self {
        Self {
            probe: crate::bench_object::load(&Self::seeded(options))
                .expect("load the benchmarks' programs (are we root?)"),
        }
    }

    /// As [`Tester::bench_with`], with the flow table of earlier versions
    /// (see [`crate::bench_object::load_earlier_table`]).
    pub fn bench_earlier_table(options: &LoadOptions) -> Self {
        Self {
            probe: crate::bench_object::load_earlier_table(&Self::seeded(options))
                .expect("load the benchmarks' programs (are we root?)"),
        }
    }

    fn seeded(options: &LoadOptions) -> LoadOptions {
        LoadOptions {
            flow_seed: options.flow_seed.or(Some(TEST_FLOW_SEED)),
            ..*options
        }
    }

    /// Runs the ingress (XDP) program on `frame`; returns its verdict.
    pub fn ingress(&mut self, frame: &[u8]) -> u32 {
        let program = self.probe.ingress_program().expect("ingress program");
        let options = TestRunOptions {
            data_in: Some(frame),
            ..TestRunOptions::default()
        };
        program
            .test_run(options)
            .expect("BPF_PROG_TEST_RUN (xdp)")
            .return_value
    }

    /// Runs the ingress program's TC twin on `frame`; returns its verdict.
    pub fn ingress_tc(&mut self, frame: &[u8]) -> i32 {
        let program = self.probe.tc_ingress_program().expect("TC ingress program");
        let options = TestRunOptions {
            data_in: Some(frame),
            ..TestRunOptions::default()
        };
        program
            .test_run(options)
            .expect("BPF_PROG_TEST_RUN (tc ingress)")
            .return_value as i32
    }

    /// Runs the egress (TC) program on `frame`; returns its verdict.
    pub fn egress(&mut self, frame: &[u8]) -> i32 {
        let program = self.probe.egress_program().expect("egress program");
        let options = TestRunOptions {
            data_in: Some(frame),
            ..TestRunOptions::default()
        };
        program
            .test_run(options)
            .expect("BPF_PROG_TEST_RUN (tc)")
            .return_value as i32
    }

    /// Counters summed over CPUs.
    pub fn counters(&self) -> Counters {
        Counters(self.probe.counters().expect("read counters"))
    }

    /// Number of observations in a latency histogram.
    pub fn latency_count(&self, direction: Direction, leg: Leg) -> u64 {
        let latency = self.probe.latency().expect("read latency");
        let base = base_index(direction, leg) as usize;
        latency[base..base + BUCKETS as usize].iter().sum()
    }

    /// The probe itself (listener ports, pending filter, ...).
    pub fn probe(&mut self) -> &mut Probe {
        &mut self.probe
    }

    /// The probe, to read.
    pub fn probe_ref(&self) -> &Probe {
        &self.probe
    }

    /// Sum of a latency histogram's samples, in ns.
    pub fn latency_sum_ns(&self, direction: Direction, leg: Leg) -> u64 {
        let latency = self.probe.latency().expect("read latency");
        latency[handshake_common::histogram::sum_index(direction, leg) as usize]
    }

    /// Count in one latency bucket.
    pub fn latency_bucket(&self, direction: Direction, leg: Leg, bucket: u32) -> u64 {
        let latency = self.probe.latency().expect("read latency");
        latency[(base_index(direction, leg) + bucket) as usize]
    }

    /// Every entry in the flow table, read a bucket at a time (the agent's
    /// in-place read is checked against this).
    pub fn entries(&self) -> Vec<(FlowKey, FlowState)> {
        let mut out = Vec::new();
        self.for_each_flow(|k, s| out.push((*k, *s)));
        out
    }

    /// Handshakes in progress and timed-out tombstones: every entry but the
    /// handshakes that ended (see [`Tester::ended`]).
    pub fn flows(&self) -> Vec<(FlowKey, FlowState)> {
        let mut out = self.entries();
        out.retain(|(_, s)| s.stage != Stage::Ended as u8);
        out
    }

    /// The handshakes that ended (completed, rejected, aborted), remembered
    /// for their retransmissions.
    pub fn ended(&self) -> Vec<(FlowKey, FlowState)> {
        let mut out = self.entries();
        out.retain(|(_, s)| s.stage == Stage::Ended as u8);
        out
    }

    /// Empties the flow table (every way free), writing it through a shared
    /// mapping: one pass over its memory, no syscall per bucket. Plain
    /// stores, as the kernel's zeroing of a new table: a memset of this size
    /// may use non-temporal stores, which would leave the table out of the
    /// caches as no real table is.
    pub fn empty_flow_table(&self) {
        let map = self.probe.ebpf().map(map_names::FLOWS).expect("flow table");
        let aya::maps::Map::Array(data) = map else {
            panic!("FLOWS is not an array")
        };
        let buckets = data.info().expect("map info").max_entries();
        let table = MappedBuckets::writable(data.fd(), buckets).expect("mapping the flow table");
        for i in 0..table.len() {
            let words = table.bucket(i).cast::<u64>();
            for w in 0..size_of::<Bucket>() / 8 {
                // SAFETY: a word of a mapped bucket; all-zero bytes are an
                // empty bucket.
                unsafe { words.add(w).write_volatile(0) };
            }
        }
    }

    /// Streams every flow in the flow table to `each`, reading it one bucket
    /// per map lookup syscall.
    pub fn for_each_flow(&self, mut each: impl FnMut(&FlowKey, &FlowState)) {
        let map = self.probe.ebpf().map(map_names::FLOWS).expect("flow table");
        let buckets: Array<_, Bucket> = Array::try_from(map).expect("flow table type");
        for bucket in buckets.iter() {
            for (key, state) in bucket.expect("read bucket").occupied() {
                each(key, state);
            }
        }
    }

    /// Frees a handshake as the agent's timeout scan does.
    pub fn expire(&mut self, key: &FlowKey, syn_ns: u64) -> bool {
        self.probe
            .expire(key, syn_ns)
            .expect("run the expire program")
    }
}

impl Default for Tester {
    fn default() -> Self {
        Self::new()
    }
}

/// A snapshot of the `COUNTERS` array.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Counters(pub Vec<u64>);

impl Counters {
    /// Summed over interface slots.
    pub fn get(&self, family: Family, direction: Direction, counter: Counter) -> u64 {
        (0..IFACE_SLOTS)
            .map(|s| self.in_slot(s, family, direction, counter))
            .sum()
    }

    pub fn in_slot(
        &self,
        slot: u32,
        family: Family,
        direction: Direction,
        counter: Counter,
    ) -> u64 {
        self.0[counter_index(slot, family, direction, counter) as usize]
    }

    /// Sum over families and directions.
    pub fn total(&self, counter: Counter) -> u64 {
        Family::ALL
            .iter()
            .flat_map(|f| Direction::ALL.iter().map(move |d| (*f, *d)))
            .map(|(f, d)| self.get(f, d, counter))
            .sum()
    }

    /// Every non-zero (family, direction, counter) but `Packets`, sorted.
    pub fn nonzero(&self) -> Vec<(Family, Direction, Counter, u64)> {
        let mut out = Vec::new();
        for f in Family::ALL {
            for d in Direction::ALL {
                for &c in Counter::ALL {
                    let v = self.get(f, d, c);
                    if v != 0 && c != Counter::Packets {
                        out.push((f, d, c, v));
                    }
                }
            }
        }
        debug_assert_eq!(self.0.len(), COUNTERS_LEN as usize);
        out
    }
}

/// Which ingress program a case's ingress frames go through: the XDP one
/// or its TC twin (`--ingress-hook`). Both must leave the same counters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ingress {
    Xdp,
    Tc,
}

impl Ingress {
    /// Runs `frame` through this ingress program; an error unless the
    /// verdict is pass (XDP_PASS, TC_ACT_UNSPEC).
    pub fn pass(self, tester: &mut Tester, frame: &[u8]) -> Result<(), String> {
        match self {
            Self::Xdp => match tester.ingress(frame) {
                XDP_PASS => Ok(()),
                v => Err(format!("XDP verdict {v}, not XDP_PASS")),
            },
            Self::Tc => match tester.ingress_tc(frame) {
                TC_NEXT => Ok(()),
                v => Err(format!("TC ingress verdict {v}, not TC_ACT_UNSPEC")),
            },
        }
    }
}

/// Runs `steps` (ingress frames through XDP); the first wrong verdict.
pub fn run_steps(tester: &mut Tester, steps: &[crate::cases::Step]) -> Result<(), String> {
    run_steps_on(tester, steps, Ingress::Xdp)
}

/// Runs `steps`, ingress frames through `ingress`; the first wrong verdict.
pub fn run_steps_on(
    tester: &mut Tester,
    steps: &[crate::cases::Step],
    ingress: Ingress,
) -> Result<(), String> {
    for (i, step) in steps.iter().enumerate() {
        match step {
            crate::cases::In(p) => ingress
                .pass(tester, &p.build())
                .map_err(|e| format!("step {i}: {e}"))?,
            crate::cases::InRaw(bytes) => ingress
                .pass(tester, bytes)
                .map_err(|e| format!("step {i}: {e}"))?,
            crate::cases::Out(p) => {
                let verdict = tester.egress(&p.build());
                if verdict != TC_NEXT {
                    return Err(format!("step {i}: TC verdict {verdict}, not TC_ACT_UNSPEC"));
                }
            }
        }
    }
    Ok(())
}
