//! `cargo xtask setup|run|test`: the README's commands. Each does its own
//! set-up, so a fresh clone on a fresh machine needs nothing else.
mod setup;

use std::{
    path::{Path, PathBuf},
    process::{Command, ExitCode},
};

use anyhow::{Context as _, Result, bail};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "cargo xtask")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Install what building and testing need (idempotent; quick when present).
    Setup,
    /// Build (release) and start the agent; extra arguments go to `handshake-monitor run`.
    Run {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Run every test: host unit and property tests, and the privileged
    /// integration tests (network namespaces, real traffic, BPF test runs).
    Test {
        /// Passed to `cargo test` after `--` (e.g. a test name filter).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Measure against baselines in the same run; print a table and rewrite
    /// BENCHMARKS.md.
    Bench {
        /// Fewer and shorter runs (under two minutes).
        #[arg(long)]
        quick: bool,
        /// Only these benchmarks (B1 .. B6, B8); the report is then not written.
        only: Vec<String>,
        /// Instead of the benchmarks: the kernel programs of two agent
        /// binaries (two builds of `handshake-monitor`), in situ on B3's
        /// path, as ns of program time per connection, in interleaved
        /// rounds. Writes nothing.
        #[arg(long, num_args = 2, value_names = ["OLD", "NEW"], conflicts_with_all = ["quick", "only"])]
        compare: Option<Vec<PathBuf>>,
        /// Rounds of --compare.
        #[arg(long, default_value_t = 7, requires = "compare")]
        rounds: u32,
        /// Seconds of connections per agent per round of --compare.
        #[arg(long, default_value_t = 3.0, requires = "compare")]
        seconds: f64,
    },
    /// The detection suite: recorded incidents and benign events in
    /// namespaces, on which the shipped alert rules and the built-in
    /// detector are scored (time to fire, to resolve, false alarms); writes
    /// its table into BENCHMARKS.md. About 30 minutes; --quick about 8.
    Detect {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// `replay` on some 1,150 public captures (the test suites of tcpdump,
    /// Wireshark, nDPI and others, fetched at pinned versions into
    /// target/corpus), each judged against an independent reading
    /// (tshark and tests/corpus/judge.py); then the short ones with the most
    /// handshakes sent by tcpreplay, between two namespaces of its own, to
    /// the live agent in tap mode. Fails on any disagreement on the funnel,
    /// panic or hang. About 10 minutes after a 190 MB download.
    Corpus,
    /// Fuzz the parser and the handshake decisions (cargo fuzz, libFuzzer).
    Fuzz {
        /// How long to run.
        #[arg(long, default_value_t = 60)]
        seconds: u32,
    },
}

fn main() -> ExitCode {
    match run(Cli::parse().task) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("xtask: error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(task: Task) -> Result<()> {
    match task {
        Task::Setup => setup::ensure(),
        Task::Run { args } => {
            setup::ensure()?;
            cargo(&["build", "--release", "--package", "handshake-user"])?;
            let bin = workspace_root().join("target/release/handshake-monitor");
            let status = Command::new(&bin)
                .arg("run")
                .args(&args)
                .status()
                .with_context(|| format!("cannot start {}", bin.display()))?;
            if !status.success() {
                bail!("handshake-monitor exited with {status}");
            }
            Ok(())
        }
        Task::Bench {
            quick,
            only,
            compare,
            rounds,
            seconds,
        } => {
            setup::ensure()?;
            let release = build_release_with("handshake-bench")?;
            let mut cmd = Command::new(release.join("handshake-bench"));
            if quick {
                cmd.arg("--quick");
            }
            if let Some(bins) = compare {
                for bin in &bins {
                    if !bin.is_file() {
                        bail!(
                            "--compare: {} is not a file (give two handshake-monitor binaries)",
                            bin.display()
                        );
                    }
                }
                let bins = bins
                    .iter()
                    .map(|b| std::path::absolute(b).unwrap_or_else(|_| b.clone()));
                cmd.arg("--compare").args(bins).args([
                    "--rounds",
                    &rounds.to_string(),
                    "--seconds",
                    &seconds.to_string(),
                ]);
            }
            let status = cmd
                .args(&only)
                .env("HANDSHAKE_MONITOR_BIN", release.join("handshake-monitor"))
                .current_dir(workspace_root())
                .status()
                .context("cannot run the benchmarks")?;
            if !status.success() {
                bail!("benchmarks failed ({status})");
            }
            Ok(())
        }
        Task::Detect { args } => {
            setup::ensure()?;
            let release = build_release_with("handshake-detect")?;
            let status = Command::new(release.join("handshake-detect"))
                .args(&args)
                .env("HANDSHAKE_MONITOR_BIN", release.join("handshake-monitor"))
                .current_dir(workspace_root())
                .status()
                .context("cannot run the detection suite")?;
            if !status.success() {
                bail!("detection suite: goals missed or it failed ({status})");
            }
            Ok(())
        }
        Task::Corpus => {
            setup::ensure()?;
            cargo(&["build", "--release", "--package", "handshake-user"])?;
            let root = workspace_root();
            let dir = root.join("target/corpus");
            let script = root.join("tests/corpus/corpus.py");
            let bin = root.join("target/release/handshake-monitor");
            python(&[script.as_os_str(), "fetch".as_ref(), dir.as_os_str()])?;
            let report = dir.join("report.json");
            python(&[
                script.as_os_str(),
                "run".as_ref(),
                dir.as_os_str(),
                bin.as_os_str(),
                "--report".as_ref(),
                report.as_os_str(),
            ])
            .context("replay and the independent reading disagree (listed above)")?;
            // Then the live agent in tap mode, on the short captures with the
            // most handshakes, sent between two namespaces of its own.
            watching_uplinks("while captures were sent", || {
                python(&[
                    script.as_os_str(),
                    "live".as_ref(),
                    dir.as_os_str(),
                    bin.as_os_str(),
                    "--report".as_ref(),
                    report.as_os_str(),
                ])
            })
            .context("the live agent and replay disagree (listed above)")
        }
        Task::Fuzz { seconds } => {
            setup::ensure()?;
            setup::ensure_cargo_fuzz()?;
            let dir = workspace_root().join("handshake-common");
            let time = format!("-max_total_time={seconds}");
            let status = Command::new("cargo")
                .args(["+nightly", "fuzz", "run", "parse_and_decide", "--", &time])
                .current_dir(dir)
                .env("PATH", setup::path_with_cargo_bin())
                .status()
                .context("cannot run cargo fuzz")?;
            if !status.success() {
                bail!("fuzzing found a failure (see the artifact above)");
            }
            Ok(())
        }
        Task::Test { args } => {
            setup::ensure()?;
            // The integration tests start the agent binary: build it, and
            // every test, before the traffic window opens (crate downloads
            // are not test traffic).
            // One format, and the workspace's lints, before anything runs.
            cargo(&["fmt", "--all", "--check"])?;
            cargo(&["clippy", "--all-targets", "--", "-D", "warnings"])?;
            cargo(&["build", "--package", "handshake-user"])?;
            cargo(&["test", "--no-run"])?;
            let bin = workspace_root().join("target/debug/handshake-monitor");
            // The default members: every crate but the bpf-only kernel programs.
            let mut test = vec!["test", "--no-fail-fast", "--"];
            test.extend(args.iter().map(String::as_str));
            watching_uplinks("during the tests", || {
                cargo_with_env(&test, &[("HANDSHAKE_MONITOR_BIN", bin.as_os_str())])
            })
        }
    }
}

/// Builds the agent and `tool` (a binary of handshake-tests) for release;
/// returns their directory.
fn build_release_with(tool: &str) -> Result<PathBuf> {
    cargo(&[
        "build",
        "--release",
        "--package",
        "handshake-user",
        "--package",
        "handshake-tests",
        "--bin",
        "handshake-monitor",
        "--bin",
        tool,
    ])?;
    Ok(workspace_root().join("target/release"))
}

pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

/// Runs `work`, then prints how far each root-namespace interface's
/// `tx_packets` moved meanwhile. Network safety: test traffic stays in
/// namespaces; background traffic moves these counters a little, a leak
/// moves them a lot.
fn watching_uplinks<T>(during: &str, work: impl FnOnce() -> T) -> T {
    let before = setup::uplink_tx_packets();
    let result = work();
    for ((name, before), (_, after)) in before.iter().zip(setup::uplink_tx_packets()) {
        println!(
            "xtask: {name} tx_packets moved by {} {during}",
            after.saturating_sub(*before)
        );
    }
    result
}

fn python(args: &[&std::ffi::OsStr]) -> Result<()> {
    let status = Command::new("python3")
        .args(args)
        .current_dir(workspace_root())
        .status()
        .context("cannot run python3")?;
    if !status.success() {
        bail!("python3 {} failed ({status})", args[0].to_string_lossy());
    }
    Ok(())
}

fn cargo(args: &[&str]) -> Result<()> {
    cargo_with_env(args, &[])
}

fn cargo_with_env(args: &[&str], env: &[(&str, &std::ffi::OsStr)]) -> Result<()> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.args(args)
        .current_dir(workspace_root())
        .env("PATH", setup::path_with_cargo_bin());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let status = cmd
        .status()
        .with_context(|| format!("cannot run cargo {}", args.join(" ")))?;
    if !status.success() {
        bail!("cargo {} failed ({status})", args.join(" "));
    }
    Ok(())
}
