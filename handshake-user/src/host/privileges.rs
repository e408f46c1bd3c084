//! Loading BPF programs needs privileges; say so plainly before trying.
use std::fs;

use anyhow::{Result, bail};

const CAP_NET_ADMIN: u32 = 12;
const CAP_SYS_ADMIN: u32 = 21;
const CAP_PERFMON: u32 = 38;
const CAP_BPF: u32 = 39;

fn effective_capabilities() -> Option<u64> {
    let status = fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("CapEff:"))?;
    u64::from_str_radix(line.trim_start_matches("CapEff:").trim(), 16).ok()
}

/// Fails with one line naming the missing capabilities.
pub fn check() -> Result<()> {
    let Some(caps) = effective_capabilities() else {
        return Ok(()); // can't tell: let the kernel decide
    };
    let has = |cap: u32| caps & (1u64 << cap) != 0;
    let bpf = has(CAP_BPF) || has(CAP_SYS_ADMIN);
    let perfmon = has(CAP_PERFMON) || has(CAP_SYS_ADMIN);
    let mut missing = Vec::new();
    if !bpf {
        missing.push("CAP_BPF");
    }
    if !perfmon {
        missing.push("CAP_PERFMON");
    }
    if !has(CAP_NET_ADMIN) {
        missing.push("CAP_NET_ADMIN");
    }
    if !missing.is_empty() {
        bail!(
            "missing privilege: {} (run as root, or grant them to the binary)",
            missing.join(", ")
        );
    }
    Ok(())
}
