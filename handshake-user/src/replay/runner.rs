//! Running one frame of a capture through the kernel programs.
use anyhow::Result;
use aya::programs::{TestRun as _, TestRunOptions};

use super::{MAX_RUN_FRAME, Report, explain, reorder::Numbered};
use crate::{kernel::readers::FlowReader, pcap::Way, probe::Probe};

/// Runs frames through the programs, in the order the reorder stage gives.
pub struct Runner {
    /// --explain: the flow table, read in place, and its seed.
    pub explainer: Option<(FlowReader, u64)>,
    /// The programs' clock: the capture's time, never going back (a
    /// SYN-ACK put back after its SYN runs at the SYN's time).
    pub clock_ns: u64,
}

impl Runner {
    pub fn frame(&mut self, probe: &mut Probe, frame: Numbered, report: &mut Report) -> Result<()> {
        let packet = frame.packet;
        self.clock_ns = self.clock_ns.max(packet.ts_ns);
        probe.set_replay_clock(self.clock_ns)?;
        let bytes = if packet.frame.len() > MAX_RUN_FRAME {
            report.cut += 1;
            &packet.frame[..MAX_RUN_FRAME]
        } else {
            &packet.frame[..]
        };
        // --explain: the flow's entry and the counters before the run.
        let before = match &self.explainer {
            Some((reader, seed)) => explain::segment(bytes).map(|seg| {
                let state = explain::lookup(reader, *seed, &seg).map(|(_, s)| s);
                (seg, state, probe.counters())
            }),
            None => None,
        };
        let options = TestRunOptions {
            data_in: Some(bytes),
            ..TestRunOptions::default()
        };
        let ran = if packet.way == Some(Way::Outgoing) {
            probe.egress_program()?.test_run(options)
        } else {
            probe.ingress_program()?.test_run(options)
        };
        // One frame the kernel will not run does not end the replay: it is
        // counted, the first one named, and the rest go on.
        if let Err(e) = ran {
            report.not_run += 1;
            report
                .first_not_run
                .get_or_insert_with(|| (frame.number, format!("{e}")));
        }
        if let Some((seg, state, Ok(counters))) = before {
            let at = packet.ts_ns.saturating_sub(report.first_ns) as f64 / 1e9;
            if let Some(line) = explain::line(
                frame.number,
                at,
                &seg,
                state.as_ref(),
                &counters,
                &probe.counters()?,
            ) {
                println!("{line}");
            }
        }
        Ok(())
    }
}
