//! `handshake-monitor check`: whether this host can run the agent, in plain
//! words, one line per fact.
use std::{fs, path::Path};

use anyhow::Result;

use crate::{cli::CheckArgs, interfaces, privileges, probe};

/// Drivers with native XDP support, as of Linux 6.x (not exhaustive).
const NATIVE_XDP_DRIVERS: &[&str] = &[
    "virtio_net",
    "tun",
    "mlx5_core",
    "mlx4_en",
    "i40e",
    "ice",
    "ixgbe",
    "ixgbevf",
    "igb",
    "igc",
    "bnxt_en",
    "ena",
    "nfp",
    "qede",
    "thunderx",
    "mvneta",
    "mvpp2",
    "stmmac",
    "sfc",
    "netdevsim",
    "bond",
    "xen-netfront",
    "hv_netvsc",
    "gve",
    "fec",
    "lan966x-switch",
    "atlantic",
    "octeontx2-nicpf",
];

fn line(ok: bool, what: &str, detail: &str) -> bool {
    println!("[{}] {what}: {detail}", if ok { " ok " } else { "FAIL" });
    ok
}

pub fn check(args: &CheckArgs) -> Result<bool> {
    let mut ok = true;
    let release = fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let release = release.trim();
    let major: u32 = release
        .split('.')
        .next()
        .and_then(|m| m.parse().ok())
        .unwrap_or(0);
    ok &= line(
        major >= 6,
        "kernel",
        &format!("{release} (6.x or later needed for TCX; 5.x works with clsact)"),
    );
    let btf = Path::new("/sys/kernel/btf/vmlinux").exists();
    ok &= line(
        btf,
        "BTF",
        if btf {
            "/sys/kernel/btf/vmlinux is there"
        } else {
            "no /sys/kernel/btf/vmlinux"
        },
    );
    let privs = privileges::check();
    ok &= line(
        privs.is_ok(),
        "privileges",
        &privs.as_ref().map_or_else(
            |e| format!("{e:#}"),
            |()| "CAP_BPF, CAP_PERFMON, CAP_NET_ADMIN".to_owned(),
        ),
    );
    // Where --pin-path goes by default (the unit, the DaemonSet), not any
    // bpffs mounted anywhere.
    let bpffs = crate::bpffs::is_bpffs(Path::new("/sys/fs/bpf"));
    line(
        bpffs,
        "bpffs",
        if bpffs {
            "mounted at /sys/fs/bpf (needed for --pin-path)"
        } else {
            "not mounted at /sys/fs/bpf: --pin-path needs `mount -t bpf bpf /sys/fs/bpf`"
        },
    );
    if privs.is_ok() {
        let load = probe::Probe::load(&probe::LoadOptions::default());
        ok &= line(
            load.is_ok(),
            "programs",
            &load.as_ref().map_or_else(
                |e| format!("{e:#}"),
                |_| "the verifier accepts them".to_owned(),
            ),
        );
    }
    let targets = if args.ifaces.is_empty() {
        interfaces::up()?
    } else {
        interfaces::by_name(&args.ifaces)?
    };
    for iface in targets {
        let driver = interfaces::driver(&iface.name);
        // What `run` does by default (`--ingress-hook auto`).
        let how = if iface.loopback {
            "loopback: ingress on TC, sees every local packet once; no egress program needed"
                .to_owned()
        } else {
            match driver.as_deref() {
                Some("veth") => {
                    "driver veth: ingress on TC (its packets are skbs already); TC egress"
                        .to_owned()
                }
                Some(d) if NATIVE_XDP_DRIVERS.contains(&d) => {
                    format!("driver {d}: ingress on native XDP expected (TC if refused); TC egress")
                }
                Some(d) => format!("driver {d}: no native XDP expected: ingress on TC; TC egress"),
                None => "virtual: ingress on TC unless native XDP works; TC egress".to_owned(),
            }
        };
        line(
            true,
            &format!("interface {} (index {})", iface.name, iface.index),
            &how,
        );
    }
    Ok(ok)
}
