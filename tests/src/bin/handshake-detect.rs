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
        scenario::{Event, PORT, QUICK, Scenario, all},
        score::{
            Timeline, detector_timeline, prometheus_timeline, recorded_test, replay_timeline,
            rules_timeline,
        },
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
    /// Also write deploy/prometheus/recorded_test.yml: promtool tests of
    /// the rules on the recorded series of these scenarios.
    #[arg(long, value_delimiter = ',')]
    write_tests: Vec<String>,
    /// Only these scenarios; the report is then not written.
    names: Vec<String>,
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The next scenario a worker may start: a heavy one only while no other
/// heavy one runs (then it holds the flag); None when none is left.
fn next(queue: &Mutex<Vec<Scenario>>, heavy_running: &Mutex<bool>) -> Option<Scenario> {
    loop {
        {
            let mut q = queue.lock().ok()?;
            if q.is_empty() {
                return None;
            }
            let mut busy = heavy_running.lock().ok()?;
            if let Some(i) = q.iter().position(|s| !s.heavy || !*busy) {
                let sc = q.remove(i);
                if sc.heavy {
                    *busy = true;
                }
                return Some(sc);
            }
        }
        thread::sleep(std::time::Duration::from_secs(1));
    }
}

/// Runs the scenarios, `jobs` at a time, the heavy ones one at a time.
fn run_all(scenarios: &[Scenario], out: &Path, jobs: usize) -> Result<()> {
    let queue = Arc::new(Mutex::new(scenarios.to_vec()));
    let heavy = Arc::new(Mutex::new(false));
    let errors = Arc::new(Mutex::new(Vec::new()));
    let workers: Vec<_> = (0..jobs.max(1))
        .map(|_| {
            let (queue, heavy, errors) =
                (Arc::clone(&queue), Arc::clone(&heavy), Arc::clone(&errors));
            let out = out.to_owned();
            thread::spawn(move || {
                while let Some(sc) = next(&queue, &heavy) {
                    let started = Instant::now();
                    eprintln!("detect: {} ({} s) ...", sc.name, sc.total_s);
                    // A helper's panic (a namespace that cannot be made) is
                    // this scenario's error, not the suite's end.
                    let dir = out.join(sc.name);
                    let result =
                        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run(&sc, &dir)))
                            .unwrap_or_else(|_| Err(anyhow::anyhow!("panicked (see above)")));
                    match result {
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
                    if sc.heavy
                        && let Ok(mut busy) = heavy.lock()
                    {
                        *busy = false;
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
        // Of the expected conditions, those that fired must name the port.
        let Some(line) = log
            .lines()
            .find(|l| l.contains(&format!("condition={c} state=firing")))
        else {
            continue;
        };
        let ok = line.contains(&format!("top_ports={PORT}:"));
        checked = Some(checked.unwrap_or(true) && ok);
    }
    if sc.incident { checked } else { None }
}

fn score(sc: &Scenario, dir: &Path) -> Result<Vec<Row>> {
    let rec = Recording::load(&dir.join("recording.json"))?;
    let meta: Meta = serde_json::from_str(&std::fs::read_to_string(dir.join("meta.json"))?)?;
    let rules_file = repo().join("deploy/prometheus/rules.yml");
    let end = rec.t.last().map_or(sc.total_s, |t| *t as u64);
    let mut rules = Vec::new();
    for (scrape, eval, _) in RULE_SETTINGS {
        rules.push(rules_timeline(&rec, &rules_file, *scrape, *eval, end, dir)?);
    }
    let detector = detector_timeline(&rec);
    let pcap = dir.join("capture.pcap");
    let replay = if pcap.exists() {
        Some(replay_timeline(&binary(), &pcap, meta.t0_epoch, end)?)
    } else {
        None
    };
    let live = match std::fs::read_to_string(dir.join("prometheus.json")) {
        Ok(body) => Some(prometheus_timeline(&body, meta.t0_epoch, 5, end)?),
        Err(_) => None,
    };
    let log = std::fs::read_to_string(dir.join("agent.log")).unwrap_or_default();
    let note = match sc.event {
        Event::Flood { .. } | Event::ClosedPortScan { .. } => format!("{} frames sent", meta.sent),
        _ => format!(
            "clients: {} connected, {} refused, {} failed",
            meta.clients_connected, meta.clients_refused, meta.clients_failed
        ),
    };
    Ok(sc
        .parts()
        .into_iter()
        .map(|(part, from, to)| {
            let grade = |t: &Timeline, expect: &[&str], allow: &[&str], grace: f64| {
                t.between(from, to).score(&part, expect, allow, grace)
            };
            let detector_grade = |t: &Timeline| {
                grade(
                    t,
                    part.detector_expect,
                    part.detector_allow,
                    DETECTOR_RESOLVE_GOAL_S,
                )
            };
            Row {
                rules: rules
                    .iter()
                    .map(|t| grade(t, part.expect, part.allow, RULES_GOAL_S))
                    .collect(),
                detector: detector_grade(&detector),
                replay: replay.as_ref().map(detector_grade),
                live: live
                    .as_ref()
                    .map(|t| grade(t, part.expect, part.allow, RULES_GOAL_S)),
                detector_named_port: names_port(&log, &part),
                note: note.clone(),
                scenario: part,
            }
        })
        .collect())
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
        rows.extend(score(sc, &out.join(sc.name)).with_context(|| sc.name.to_owned())?);
    }
    if !args.write_tests.is_empty() {
        let rules = std::fs::read_to_string(repo().join("deploy/prometheus/rules.yml"))?;
        let mut file = String::from(
            "# promtool test rules recorded_test.yml   (run by `cargo xtask test`)\n#\n\
             # Series recorded from real traffic by `cargo xtask detect --write-tests`,\n\
             # every 5 s: what the goals say must hold on each (nothing before the\n\
             # onset, the expected page 3 minutes after it, nothing 3 minutes after\n\
             # the end; nothing at all on a benign event).\n\
             rule_files:\n  - rules.yml\n\nevaluation_interval: 15s\n\ntests:\n",
        );
        for name in &args.write_tests {
            let sc = all()
                .into_iter()
                .find(|s| s.name == name)
                .with_context(|| format!("--write-tests: no scenario {name}"))?;
            let rec = Recording::load(&out.join(sc.name).join("recording.json"))?;
            file.push_str(&recorded_test(&sc, &rec, &rules, 5));
            file.push('\n');
        }
        std::fs::write(repo().join("deploy/prometheus/recorded_test.yml"), file)?;
        eprintln!("wrote deploy/prometheus/recorded_test.yml");
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
