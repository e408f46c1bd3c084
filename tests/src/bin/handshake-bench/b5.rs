//! B5: the agent itself: scan time, CPU, memory, scrape latency.
use super::*;

pub(crate) fn proc_stat(pid: u32) -> (f64, u64, u64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    // utime, stime are fields 14 and 15 (1-based), i.e. 11 and 12 after ')'.
    let ticks = fields
        .get(11)
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0)
        + fields
            .get(12)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0);
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kb = |k: &str| {
        status
            .lines()
            .find(|l| l.starts_with(k))
            .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
            .unwrap_or(0)
    };
    // RssAnon: the agent's own memory. VmRSS would also count the pages of
    // the flow table's shared mapping that a scan in progress holds (the
    // kernel's memory, mapped for the scan): a figure that swung by the
    // table's size with when it was sampled. VmHWM, the peak, counts them.
    (ticks as f64 / 100.0, kb("RssAnon:"), kb("VmHWM:"))
}

pub(crate) fn agent_pid(ns: &Netns) -> u32 {
    let out = Command::new("ip")
        .args(["netns", "pids", &ns.name])
        .output()
        .expect("ip netns pids");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.trim().parse::<u32>().ok())
        .find(|pid| {
            std::fs::read_link(format!("/proc/{pid}/exe"))
                .is_ok_and(|e| e == binary() || e.ends_with("handshake-monitor"))
        })
        .expect("agent pid")
}

pub(crate) fn b5(s: &Settings, rows: &mut Vec<Row>) {
    eprintln!("B5 the agent: flow-table scans, CPU, memory, scrape latency");
    let sizes: &[usize] = if s.quick {
        &[65536, 262_144]
    } else {
        &[65536, 262_144, 1 << 20]
    };
    for &n in sizes {
        let mut t = Tester::bench_with(&unlimited(n as u32));
        fill_flows(&mut t, n);
        let (mut batched, mut single, mut ratio) = (Vec::new(), Vec::new(), Vec::new());
        let reader = t.probe().flow_reader().expect("flow reader");
        for _ in 0..s.runs {
            // Both sides visit every flow and count it: the agent's scan
            // (`run.rs`) feeds each to its summary the same way.
            let t0 = Instant::now();
            let mut a = 0;
            reader.for_each(|_, _| a += 1).expect("in-place scan");
            let b_time = t0.elapsed().as_secs_f64();
            let t1 = Instant::now();
            let mut b = 0;
            t.for_each_flow(|_, _| b += 1);
            let s_time = t1.elapsed().as_secs_f64();
            assert_eq!((a, b), (n, n));
            batched.push(b_time);
            single.push(s_time);
            ratio.push(s_time / b_time);
        }
        let r = median(&mut ratio);
        rows.push(Row {
            bench: "B5",
            case: format!("flow-table scan, {} entries", n),
            baseline: format!("{:.0} ms one at a time", median(&mut single) * 1e3),
            ours: format!("{:.0} ms in place (mmap)", median(&mut batched) * 1e3),
            figure: format!("{r:.1}x faster"),
            goal: ">= 5x".to_owned(),
            verdict: verdict(Some(r >= 5.0)),
        });
        eprintln!("  B5 scan {n}: {r:.1}x");
    }
    // The running agent at a full table, against itself at an empty one.
    let n = if s.quick { 262_144 } else { 1 << 20 };
    let bpffs = std::env::temp_dir().join(format!("hm-bench-bpffs-{}", std::process::id()));
    std::fs::create_dir_all(&bpffs).expect("dir");
    assert!(
        Command::new("mount")
            .args(["-t", "bpf", "bpf"])
            .arg(&bpffs)
            .status()
            .expect("mount")
            .success()
    );
    let pin = bpffs.join("hm");
    let ns = Netns::new("bench-agent");
    let size = n.to_string();
    let pin_s = pin.display().to_string();
    let measure = |agent: &Agent| {
        let pid = agent_pid(&ns);
        let (cpu0, _, _) = proc_stat(pid);
        let t0 = Instant::now();
        let mut lat = Vec::new();
        let mut series = 0;
        for _ in 0..100 {
            let a = Instant::now();
            let e: Exposition = agent.scrape(&ns);
            lat.push(a.elapsed().as_secs_f64());
            series = e.text.lines().filter(|l| !l.starts_with('#')).count();
            thread::sleep(Duration::from_millis(40));
        }
        let (cpu1, rss, hwm) = proc_stat(pid);
        lat.sort_by(f64::total_cmp);
        let p99 = lat[lat.len() * 99 / 100 - 1];
        (
            (cpu1 - cpu0) / t0.elapsed().as_secs_f64(),
            rss,
            hwm,
            p99,
            series,
        )
    };
    let args = [
        "--iface",
        "lo",
        "--flow-table-size",
        size.as_str(),
        "--pin-path",
        pin_s.as_str(),
        "--handshake-timeout",
        "300s",
    ];
    let agent = Agent::start(&ns, &args);
    let empty = measure(&agent);
    // Fill the pinned table behind the running agent.
    {
        let maps = pin.join("maps");
        let seeds = aya::maps::Map::Array(
            aya::maps::MapData::from_pin(maps.join(map_names::FLOW_SEED))
                .expect("pinned FLOW_SEED"),
        );
        let seed = aya::maps::Array::<_, u64>::try_from(&seeds)
            .expect("FLOW_SEED")
            .get(&0, 0)
            .expect("seed");
        let mut map = aya::maps::Map::Array(
            aya::maps::MapData::from_pin(maps.join(map_names::FLOWS)).expect("pinned FLOWS"),
        );
        let mut flows = aya::maps::Array::<_, Bucket>::try_from(&mut map).expect("FLOWS");
        let now = handshake_user::run::monotonic_ns();
        // On lo's counter slot (1: the agent's only interface), as its own
        // traffic would be: the comparison is about flows, not about a
        // first use of iface="other" (whose series appear once, when used).
        let on_lo = half_open_flows(2, now).map(|(k, s)| (k, FlowState { iface_slot: 1, ..s }));
        let placed =
            handshake_user::probe::fill_flow_table(&mut flows, seed, on_lo, n).expect("fill");
        assert_eq!(placed, n);
    }
    thread::sleep(Duration::from_secs(2));
    let full = measure(&agent);
    drop(agent);
    let _ = Command::new(binary())
        .args(["cleanup", "--pin-path", &pin_s])
        .output();
    let _ = Command::new("umount").arg(&bpffs).status();
    let _ = std::fs::remove_dir(&bpffs);
    rows.push(Row {
        bench: "B5",
        case: format!("agent CPU, {n} half-open entries"),
        baseline: format!("{:.1} % of a core (empty table)", empty.0 * 100.0),
        ours: format!("{:.1} % of a core", full.0 * 100.0),
        figure: format!("+{:.1} points", (full.0 - empty.0) * 100.0),
        goal: "-".to_owned(),
        verdict: "-",
    });
    rows.push(Row {
        bench: "B5",
        case: format!("agent RSS (anonymous: its own memory), {n} half-open entries"),
        baseline: format!("{} MiB (empty table)", empty.1 / 1024),
        ours: format!(
            "{} MiB (peak RSS {} MiB, the table's mapping included)",
            full.1 / 1024,
            full.2 / 1024
        ),
        figure: format!("+{} MiB", (full.1.saturating_sub(empty.1)) / 1024),
        goal: "-".to_owned(),
        verdict: "-",
    });
    rows.push(Row {
        bench: "B5",
        case: "/metrics p99 latency, full vs empty table".to_owned(),
        baseline: format!("{:.2} ms", empty.3 * 1e3),
        ours: format!("{:.2} ms", full.3 * 1e3),
        figure: format!("{:.2}x", full.3 / empty.3),
        goal: "bounded".to_owned(),
        verdict: "-",
    });
    rows.push(Row {
        bench: "B5",
        case: "/metrics series, full vs empty table".to_owned(),
        baseline: format!("{}", empty.4),
        ours: format!("{}", full.4),
        figure: if empty.4 == full.4 {
            "same".to_owned()
        } else {
            format!("{:+}", full.4 as i64 - empty.4 as i64)
        },
        goal: "independent of flows".to_owned(),
        verdict: verdict(Some(empty.4 == full.4)),
    });
}
