//! Installs what the build and the tests need, checking first so a second
//! run takes a second: the nightly toolchain's rust-src (the eBPF crate is
//! built with -Z build-std=core), LLVM 22 from Debian, bpf-linker built
//! against it, and the Debian tools the tests drive.
use std::{
    env,
    ffi::OsString,
    fs,
    path::PathBuf,
    process::{Command, Stdio},
};

use anyhow::{Context as _, Result, bail};

/// Debian packages and a command each provides that proves it is there.
const DEBIAN_TOOLS: &[(&str, &str)] = &[
    ("iproute2", "/usr/sbin/ip"),
    ("curl", "/usr/bin/curl"),
    // promtool: the exposition is checked with it.
    ("prometheus", "/usr/bin/promtool"),
    // setpriv: the missing-privilege test runs the agent unprivileged.
    ("util-linux", "/usr/bin/setpriv"),
    // tcpdump: replay must agree with the live agent on a real capture.
    ("tcpdump", "/usr/bin/tcpdump"),
    // tshark: the independent reading replay is judged against
    // (tests/corpus/judge.py).
    ("tshark", "/usr/bin/tshark"),
    // tcpreplay: cargo xtask corpus sends public captures to the live agent.
    ("tcpreplay", "/usr/bin/tcpreplay"),
    // hping3: the random-source SYN flood of the end-to-end scenario.
    ("hping3", "/usr/sbin/hping3"),
    // nft: the scenario's clients whose final ACKs are dropped.
    ("nftables", "/usr/sbin/nft"),
    // systemd-analyze: the systemd unit is verified with it.
    ("systemd", "/usr/bin/systemd-analyze"),
];
const LLVM_PACKAGES: &[&str] = &["llvm-22-dev", "libpolly-22-dev"];
const LLVM_PREFIX: &str = "/usr/lib/llvm-22";
const NIGHTLY: &str = "nightly";

pub fn ensure() -> Result<()> {
    if !is_root() {
        bail!("setup installs packages and the tests load BPF programs: run as root");
    }
    ensure_rust_src()?;
    ensure_lint_tools()?;
    let mut missing: Vec<&str> = LLVM_PACKAGES
        .iter()
        .copied()
        .filter(|p| !dpkg_installed(p))
        .collect();
    missing.extend(
        DEBIAN_TOOLS
            .iter()
            .filter(|(_, bin)| !PathBuf::from(bin).exists())
            .map(|(p, _)| *p),
    );
    if !missing.is_empty() {
        apt_install(&missing)?;
    }
    ensure_bpf_linker()?;
    ensure_kubernetes_validate()?;
    Ok(())
}

/// kubernetes-validate (PyPI): the DaemonSet is checked against the
/// Kubernetes schema it ships, offline.
fn ensure_kubernetes_validate() -> Result<()> {
    if quiet(Command::new("python3").args(["-m", "kubernetes_validate", "--version"])) {
        return Ok(());
    }
    say("installing kubernetes-validate (PyPI)");
    run(
        Command::new("python3").args(["-m", "pip", "install", "--quiet", "kubernetes-validate"]),
        "pip install kubernetes-validate",
    )
}

fn is_root() -> bool {
    fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.split_whitespace().nth(2) == Some("0"))
        })
        .unwrap_or(false)
}

fn say(what: &str) {
    println!("xtask setup: {what}");
}

fn quiet(cmd: &mut Command) -> bool {
    cmd.stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn run(cmd: &mut Command, what: &str) -> Result<()> {
    let status = cmd.status().with_context(|| format!("cannot {what}"))?;
    if !status.success() {
        bail!("could not {what} ({status})");
    }
    Ok(())
}

/// rustfmt and clippy on the toolchain that builds the agent: `cargo xtask
/// test` checks the format and the lints.
fn ensure_lint_tools() -> Result<()> {
    let out = Command::new("rustup")
        .args(["component", "list", "--installed"])
        .output()
        .context("rustup not found: install Rust with rustup first")?;
    let installed = String::from_utf8_lossy(&out.stdout);
    let missing: Vec<&str> = ["rustfmt", "clippy"]
        .into_iter()
        .filter(|c| !installed.lines().any(|l| l.starts_with(c)))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    say(&format!("adding {}", missing.join(" and ")));
    run(
        Command::new("rustup")
            .args(["component", "add"])
            .args(&missing),
        "add rustfmt and clippy",
    )
}

fn ensure_rust_src() -> Result<()> {
    let out = Command::new("rustup")
        .args(["component", "list", "--installed", "--toolchain", NIGHTLY])
        .output()
        .context("rustup not found: install Rust with rustup first")?;
    let installed = String::from_utf8_lossy(&out.stdout);
    if out.status.success() && installed.lines().any(|l| l.starts_with("rust-src")) {
        return Ok(());
    }
    if !out.status.success() {
        say("installing the nightly toolchain");
        run(
            Command::new("rustup").args(["toolchain", "install", NIGHTLY, "--profile", "minimal"]),
            "install the nightly toolchain",
        )?;
    }
    say("adding rust-src to the nightly toolchain");
    run(
        Command::new("rustup").args(["component", "add", "rust-src", "--toolchain", NIGHTLY]),
        "add rust-src to nightly",
    )
}

fn dpkg_installed(package: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", package])
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
}

fn apt_install(packages: &[&str]) -> Result<()> {
    say(&format!(
        "installing Debian packages: {}",
        packages.join(" ")
    ));
    run(
        Command::new("apt-get")
            .args(["update", "-qq"])
            .env("DEBIAN_FRONTEND", "noninteractive"),
        "apt-get update",
    )?;
    run(
        Command::new("apt-get")
            .args(["install", "-y", "-qq", "--no-install-recommends"])
            .args(packages)
            .env("DEBIAN_FRONTEND", "noninteractive"),
        &format!("apt-get install {}", packages.join(" ")),
    )
}

fn cargo_bin_dir() -> PathBuf {
    env::var_os("CARGO_HOME")
        .map_or_else(
            || PathBuf::from(env::var_os("HOME").unwrap_or_else(|| "/root".into())).join(".cargo"),
            PathBuf::from,
        )
        .join("bin")
}

/// PATH with cargo's bin directory first, so aya-build finds bpf-linker.
pub fn path_with_cargo_bin() -> OsString {
    let mut paths = vec![cargo_bin_dir()];
    paths.extend(env::split_paths(&env::var_os("PATH").unwrap_or_default()));
    env::join_paths(paths).unwrap_or_default()
}

fn ensure_bpf_linker() -> Result<()> {
    let linker = cargo_bin_dir().join("bpf-linker");
    if quiet(Command::new(&linker).arg("--version")) {
        return Ok(());
    }
    say("building bpf-linker against LLVM 22 (about a minute)");
    let mut path = OsString::from(format!("{LLVM_PREFIX}/bin:"));
    path.push(path_with_cargo_bin());
    run(
        Command::new("cargo")
            .args([
                "install",
                "bpf-linker",
                "--version",
                "0.13.0",
                "--no-default-features",
                "--features",
                "llvm-22",
            ])
            .env("LLVM_PREFIX", LLVM_PREFIX)
            .env("PATH", path),
        "build bpf-linker",
    )
}

/// cargo-fuzz, for `cargo xtask fuzz` only.
pub fn ensure_cargo_fuzz() -> Result<()> {
    if quiet(Command::new(cargo_bin_dir().join("cargo-fuzz")).arg("--version")) {
        return Ok(());
    }
    say("installing cargo-fuzz");
    run(
        Command::new("cargo").args(["install", "cargo-fuzz", "--locked"]),
        "install cargo-fuzz",
    )
}

/// tx_packets of the root namespace's non-loopback interfaces.
pub fn uplink_tx_packets() -> Vec<(String, u64)> {
    let Ok(entries) = fs::read_dir("/sys/class/net") else {
        return Vec::new();
    };
    let mut out: Vec<(String, u64)> = entries
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name() != "lo")
        .filter_map(|e| {
            let tx = fs::read_to_string(e.path().join("statistics/tx_packets"))
                .ok()?
                .trim()
                .parse()
                .ok()?;
            Some((e.file_name().to_string_lossy().into_owned(), tx))
        })
        .collect();
    out.sort();
    out
}
