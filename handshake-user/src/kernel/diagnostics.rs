//! The programs' diagnostic events: aya-log records for segments counted
//! invalid or unsolicited, each naming the flow, the check, what it wanted
//! and what came. The programs emit them only when loaded with
//! `LoadOptions::diagnostics` (the agent does at `--log.level debug`), at
//! most 20 per CPU per second.
use std::os::fd::AsRawFd as _;

use anyhow::{Context as _, Result};

use super::probe::Probe;

impl Probe {
    /// Logs the programs' diagnostic events from now on, at debug level: a
    /// thread waits on their ring buffer and hands each record to the log
    /// crate, so they come out in the agent's own log format.
    pub fn follow_diagnostics(&mut self) -> Result<()> {
        let mut logger = aya_log::EbpfLogger::init(&mut self.ebpf)
            .context("cannot read the programs' diagnostic events")?;
        std::thread::Builder::new()
            .name("diagnostics".into())
            .spawn(move || {
                loop {
                    let mut ready = libc::pollfd {
                        fd: logger.as_raw_fd(),
                        events: libc::POLLIN,
                        revents: 0,
                    };
                    // SAFETY: one pollfd, and its count.
                    unsafe { libc::poll(&raw mut ready, 1, 1000) };
                    logger.flush();
                }
            })
            .context("cannot start the diagnostics thread")?;
        Ok(())
    }
}
