//! `cargo xtask detect`: runs the detection scenarios (or re-scores their
//! recordings), scores the shipped rules and the built-in detector, prints
//! the table and writes it into BENCHMARKS.md.
use std::{
    path::{Path, PathBuf},
    process::ExitCode,
    sync::{Arc, Mutex},
    thread,
    time::Instant,
};

use anyhow::{Context as _, Result};
use clap::Parser;
use handshake_tests::{
    agent::binary,
    detect::{
        record::Recording,
        report::{
            DETECTOR_RESOLVE_GOAL_S, RULE_SETTINGS, RULES_GOAL_S, Row, replace_section, table,
        },
        run::{Meta, run},
        scenario::{PORT, QUICK, Scenario, all},
        score::{detector_timeline, replay_timeline, rules_timeline},
    },
};

#[derive(Parser)]
#[command(name = "handshake-detect")]
struct Args {
    /// Only the quick scenarios (a flood, a dead listener, a restart).
    #[arg(long)]
    quick: bool,
    /// Score the recordings already in --out again; run no traffic.
    #[arg(long)]
    rescore: bool,
    /// Scenarios run at once (the floods always run alone).
    #[arg(long, default_value_t = 4)]
    jobs: usize,
    /// Where recordings go.
    #[arg(long, default_value = "target/detect")]
    out: PathBuf,
    /// Only these scenarios; the report is then not written.
    names: Vec<String>,
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Runs the scenarios, `jobs` at a time, the heavy ones one at a time.
fn run_all(scenarios: &[Scenario], out: &Path, jobs: usize) -> Result<()> {
    let queue = Arc::new(Mutex::new(scenarios.to_vec()));
    let heavy = Arc::new(Mutex::new(()));
    let errors = Arc::new(Mutex::new(Vec::new()));
    let workers: Vec<_> = (0..jobs.max(1))
        .map(|_| {
            let (queue, heavy, errors) =
                (Arc::clone(&queue), Arc::clone(&heavy), Arc::clone(&errors));
            let out = out.to_owned();
            thread::spawn(move || {
                while let Some(sc) = queue
                    .lock()
                    .ok()
                    .and_then(|mut q| (!q.is_empty()).then(|| q.remove(0)))
                {
                    let _guard = sc.heavy.then(|| heavy.lock());
                    let started = Instant::now();
                    eprintln!("detect: {} ({} s) ...", sc.name, sc.total_s);
                    match run(&sc, &out.join(sc.name)) {
                        Ok(()) => eprintln!(
                            "detect: {} recorded in {:.0} s",
                            sc.name,
                            started.elapsed().as_secs_f64()
                        ),
                        Err(e) => {
                            if let Ok(mut v) = errors.lock() {
                                v.push(format!("{}: {e:#}", sc.name));
                            }
                        }
                    }
                }
            })
        })
        .collect();
    for w in workers {
        let _ = w.join();
    }
    let errors = errors.lock().map(|v| v.clone()).unwrap_or_default();
    anyhow::ensure!(errors.is_empty(), "{}", errors.join("; "));
    Ok(())
}

/// Whether the agent's line for each expected condition names port 8080.
fn names_port(log: &str, sc: &Scenario) -> Option<bool> {
    let port_conditions = [
        "listener_refusing",
        "listener_not_answering",
        "half_open_buildup",
    ];
    let mut checked = None;
    for c in sc
        .detector_expect
        .iter()
        .filter(|c| port_conditions.contains(c))
    {
        let line = log
            .lines()
            .find(|l| l.contains(&format!("condition={c} state=firing")));
        let ok = line.is_some_and(|l| l.contains(&format!("top_ports={PORT}:")));
        checked = Some(checked.unwrap_or(true) && ok);
    }
    if sc.incident { checked } else { None }
}

fn score(sc: &Scenario, dir: &Path) -> Result<Row> {
    let rec = Recording::load(&dir.join("recording.json"))?;
    let meta: Meta = serde_json::from_str(&std::fs::read_to_string(dir.join("meta.json"))?)?;
    let rules_file = repo().join("deploy/prometheus/rules.yml");
    let end = rec.t.last().map_or(sc.total_s, |t| *t as u64);
    let mut rules = Vec::new();
    for (scrape, eval, _) in RULE_SETTINGS {
        let t = rules_timeline(&rec, &rules_file, *scrape, *eval, end, dir)?;
        rules.push(t.score(sc, sc.expect, sc.allow, RULES_GOAL_S));
    }
    let detector = detector_timeline(&rec).score(
        sc,
        sc.detector_expect,
        sc.detector_allow,
        DETECTOR_RESOLVE_GOAL_S,
    );
    let pcap = dir.join("capture.pcap");
    let replay = if pcap.exists() {
        let t = replay_timeline(&binary(), &pcap, meta.t0_epoch, end)?;
        Some(t.score(
            sc,
            sc.detector_expect,
            sc.detector_allow,
            DETECTOR_RESOLVE_GOAL_S,
        ))
    } else {
        None
    };
    let log = std::fs::read_to_string(dir.join("agent.log")).unwrap_or_default();
    let note = match sc.event {
        handshake_tests::detect::scenario::Event::Flood { .. }
        | handshake_tests::detect::scenario::Event::ClosedPortScan { .. } => {
            format!("{} frames sent", meta.sent)
        }
        _ => format!(
            "clients: {} connected, {} refused, {} failed",
            meta.clients_connected, meta.clients_refused, meta.clients_failed
        ),
    };
    Ok(Row {
        scenario: sc.clone(),
        rules,
        detector,
        replay,
        detector_named_port: names_port(&log, sc),
        note,
    })
}

fn main_inner(args: Args) -> Result<bool> {
    let started = Instant::now();
    let out = if args.out.is_absolute() {
        args.out.clone()
    } else {
        repo().join(&args.out)
    };
    let scenarios: Vec<Scenario> = all()
        .into_iter()
        .filter(|s| {
            if !args.names.is_empty() {
                args.names.iter().any(|n| n == s.name)
            } else {
                !args.quick || QUICK.contains(&s.name)
            }
        })
        .collect();
    anyhow::ensure!(
        !scenarios.is_empty(),
        "no such scenario; there are: {}",
        all().iter().map(|s| s.name).collect::<Vec<_>>().join(", ")
    );
    if !args.rescore {
        run_all(&scenarios, &out, args.jobs)?;
    }
    let mut rows = Vec::new();
    for sc in &scenarios {
        rows.push(score(sc, &out.join(sc.name)).with_context(|| sc.name.to_owned())?);
    }
    let text = table(&rows);
    println!("{text}");
    let all_met = rows.iter().all(Row::met);
    if args.names.is_empty() && !args.quick {
        let path = repo().join("BENCHMARKS.md");
        let doc = std::fs::read_to_string(&path).unwrap_or_default();
        let section = format!(
            "## Detection (B7)\n\nLast run: `cargo xtask detect`{}, {:.0} min. Each scenario ran \
             in its own namespaces with a fresh agent on default flags; the rules were \
             evaluated by promtool on the recorded series, the detector live and in \
             `replay` on the scenario's capture.\n\n{text}\n",
            if args.rescore { " (re-scored)" } else { "" },
            started.elapsed().as_secs_f64() / 60.0,
        );
        std::fs::write(&path, replace_section(&doc, &section))?;
        eprintln!("wrote BENCHMARKS.md");
    }
    Ok(all_met)
}

fn main() -> ExitCode {
    match main_inner(Args::parse()) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => {
            eprintln!("detect: some goals were missed (table above)");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("detect: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
