//! `handshake-monitor run`: check, bind, load, attach, then serve scrapes
//! while a background thread scans the flow table, follows interfaces and
//! listening ports, and runs the detector. SIGINT and SIGTERM stop it;
//! without --pin-path everything is detached, with it the programs stay.
use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, anyhow};
use handshake_common::{counters::OTHER_IFACE_SLOT, flow::FlowKey};
use tokio::signal::unix::{SignalKind, signal};

use crate::{
    attach::Attachments,
    cli::{DetectorArgs, IngressHook, RunArgs, XdpMode},
    detector::{Condition, Detector, Thresholds, Transition, report},
    exposition, interfaces, listeners,
    logging::STRUCTURED,
    netstat, privileges,
    probe::{CounterReader, FlowReader, LoadOptions, Probe},
    scan::{Snapshot, Summarizer},
    signals::{ratios_by_series, signals},
    web,
    window::CounterWindow,
};

/// How often interfaces and listening ports are looked at again.
const RECONCILE_EVERY: Duration = Duration::from_secs(2);
const LISTENERS_EVERY: Duration = Duration::from_secs(10);

/// What the scanner works on: the programs, their links, the detector.
/// Held while attaching to new interfaces, which can take a while; scrapes
/// never take it.
struct Shared {
    probe: Probe,
    attachments: Attachments,
    detector: Detector,
}

type SharedRef = Arc<Mutex<Shared>>;

/// What scrapes read besides the counter maps, published by the scanner and
/// held only to copy. Lock order: [`Shared`] first, then this.
struct Published {
    snapshot: Snapshot,
    /// (slot, name) of every interface with its own counter slot.
    labels: Vec<(u32, String)>,
    /// (port, slot) of every tracked listener port.
    listener_slots: Vec<(u16, u32)>,
    firing: Vec<(&'static str, bool)>,
}

type PublishedRef = Arc<Mutex<Published>>;

fn lock<T>(m: &Arc<Mutex<T>>) -> Result<std::sync::MutexGuard<'_, T>> {
    m.lock().map_err(|_| anyhow!("agent state lock poisoned"))
}

fn firing(detector: &Detector) -> Vec<(&'static str, bool)> {
    Condition::ALL
        .iter()
        .map(|c| (c.label(), detector.firing(*c)))
        .collect()
}

pub use crate::clock::monotonic_ns;

/// The detector's settings from the command line, validated.
pub fn thresholds(args: &DetectorArgs, timeout: Duration) -> Result<Thresholds> {
    let t = Thresholds {
        half_open: args.detector_half_open,
        completion_ratio: args.detector_completion_ratio,
        min_syn_rate: args.detector_min_syn_rate,
        hold: args.detector_for,
        window: args.detector_window,
        timeout,
    };
    t.validate()?;
    Ok(t)
}

pub fn run(args: RunArgs) -> Result<()> {
    let thresholds = thresholds(&args.detector, args.handshake_timeout)?;
    let most = handshake_common::listener::MAX_LISTENERS as usize - 1;
    anyhow::ensure!(
        args.listener_ports.len() <= most,
        "--listener-ports: at most {most} ports, got {}",
        args.listener_ports.len()
    );
    let explicit = !args.ifaces.is_empty();
    let targets = if explicit {
        interfaces::by_name(&args.ifaces)?
    } else {
        interfaces::up()?
    };
    anyhow::ensure!(!targets.is_empty(), "no interface is up to watch");
    anyhow::ensure!(
        args.ingress_hook != IngressHook::Tc || args.xdp_mode == XdpMode::Auto,
        "--xdp-mode is for XDP; it cannot go with --ingress-hook tc"
    );
    let web = match &args.web_config_file {
        Some(path) => web::WebConfig::load(path)?,
        None => web::WebConfig::default(),
    };
    privileges::check()?;
    web::raise_open_files_limit();
    if let Some(dir) = &args.pin_path {
        crate::bpffs::ensure_pin_dir(dir)?;
    }
    // Held until run returns: the pin directory is ours meanwhile.
    let _pins = args
        .pin_path
        .as_deref()
        .map(crate::bpffs::lock)
        .transpose()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(serve(args, web, thresholds, targets, explicit))
}

async fn serve(
    args: RunArgs,
    web: web::WebConfig,
    thresholds: Thresholds,
    targets: Vec<interfaces::Interface>,
    explicit: bool,
) -> Result<()> {
    // Bind before loading anything, so a busy port fails fast and clean.
    let listener = tokio::net::TcpListener::bind(args.listen_address)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen_address))?;

    let options = LoadOptions {
        flow_table_size: args.flow_table_size,
        syn_insert_budget: if args.syn_insert_budget == 0 {
            u64::MAX
        } else {
            args.syn_insert_budget
        },
        // At debug level the programs say why they counted a segment
        // invalid or unsolicited; otherwise they carry no trace of it.
        diagnostics: log::max_level() >= log::LevelFilter::Debug,
        // Mirrored traffic can bring a SYN-ACK before its SYN.
        tap_reorder: args.no_egress,
        ..LoadOptions::default()
    };
    let pin = args.pin_path.as_deref();
    let mut probe = Probe::load_pinned(&options, pin)?;
    if options.diagnostics {
        probe.follow_diagnostics()?;
        log::debug!(
            "kernel diagnostics on: a record per invalid or unsolicited handshake segment, at most 20 per CPU per second"
        );
    }
    let mut attachments = Attachments::new(
        &probe,
        pin,
        args.ingress_hook,
        args.xdp_mode,
        !args.no_egress,
    )?;
    attachments.prune_stale(&mut probe, &interfaces::up().unwrap_or_default());
    for iface in &targets {
        match attachments.attach(&mut probe, iface) {
            Ok(()) => {}
            // An interface the operator named must work; one we picked
            // ourselves may be one XDP cannot serve.
            Err(err) if explicit => return Err(err),
            Err(err) => log::warn!("skipping {}: {err:#}", iface.name),
        }
    }
    anyhow::ensure!(
        !attachments.names().is_empty(),
        "could not attach to any interface"
    );
    let started = Instant::now();
    let mut tracker = listeners::PortTracker::new(listeners::MAX_DISCOVERED);
    if args.listener_ports.is_empty() {
        listeners::follow(&mut tracker, &mut probe, 0)?;
    } else {
        probe.track_listener_ports(&args.listener_ports)?;
    }
    let egress = if args.no_egress {
        "off"
    } else if targets.iter().all(|t| t.loopback) {
        "none: lo's ingress sees both ways"
    } else {
        "on"
    };
    log::info!(
        "watching {} (egress: {egress}{}); metrics at {}://{}{}",
        attachments.names().join(", "),
        pin.map(|p| format!(", pinned in {}", p.display()))
            .unwrap_or_default(),
        if web.tls.is_some() { "https" } else { "http" },
        args.listen_address,
        args.telemetry_path
    );

    let detector = Detector::new(thresholds);
    let published: PublishedRef = Arc::new(Mutex::new(Published {
        snapshot: Snapshot::default(),
        labels: attachments.labels(),
        listener_slots: probe.listener_slots(),
        firing: firing(&detector),
    }));
    let counters = Arc::new(probe.counter_reader()?);
    let reader = probe.flow_reader()?;
    // The windows' first sample is taken before metrics are served:
    // whatever happens once an operator (or a test) can see the agent is
    // up falls inside them.
    let mut window = CounterWindow::new(args.ratio_window, args.detector.detector_window);
    window.push(
        monotonic_ns(),
        probe.counters()?,
        probe.listeners()?,
        netstat::syncookies_sent(),
    );
    let shared: SharedRef = Arc::new(Mutex::new(Shared {
        probe,
        attachments,
        detector,
    }));
    let stop = Arc::new(AtomicBool::new(false));
    let scanner = {
        let (shared, published, counters) = (
            Arc::clone(&shared),
            Arc::clone(&published),
            Arc::clone(&counters),
        );
        let stop = Arc::clone(&stop);
        let settings = ScanSettings {
            interval: args.scan_interval,
            timeout: args.handshake_timeout,
            ifaces: if explicit {
                Some(args.ifaces.clone())
            } else {
                None
            },
            auto_ports: args.listener_ports.is_empty(),
        };
        let state = ScanState {
            shared,
            published,
            counters,
            reader,
            ports: Mutex::new((tracker, started)),
        };
        thread::Builder::new()
            .name("scanner".into())
            .spawn(move || scanner(&state, &stop, &settings, window))?
    };

    let render: web::Render = {
        let (published, counters) = (Arc::clone(&published), Arc::clone(&counters));
        Arc::new(move || render(&published, &counters))
    };
    let server = tokio::spawn(web::serve(
        listener,
        args.telemetry_path.clone(),
        render,
        web,
    ));

    let mut term = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => log::info!("SIGINT: stopping"),
        _ = term.recv() => log::info!("SIGTERM: stopping"),
    }
    server.abort();
    stop.store(true, Ordering::Relaxed);
    let _ = scanner.join();
    if pin.is_some() {
        log::info!(
            "programs stay attached through the pinned links; a restarted agent adopts them"
        );
    }
    // Dropping the shared state drops the links: detached unless pinned.
    Ok(())
}

struct ScanSettings {
    interval: Duration,
    timeout: Duration,
    /// The interfaces the operator named; None: every interface that is up.
    ifaces: Option<Vec<String>>,
    auto_ports: bool,
}

/// What the scanner thread holds.
struct ScanState {
    shared: SharedRef,
    published: PublishedRef,
    counters: Arc<CounterReader>,
    reader: FlowReader,
    /// The default mode's listener ports, and when the agent started.
    ports: Mutex<(listeners::PortTracker, Instant)>,
}

fn scanner(
    state: &ScanState,
    stop: &AtomicBool,
    settings: &ScanSettings,
    mut window: CounterWindow,
) {
    let mut last_reconcile = Instant::now();
    let mut last_ports = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        let started = Instant::now();
        if started.duration_since(last_reconcile) >= RECONCILE_EVERY {
            last_reconcile = started;
            let wanted = match &settings.ifaces {
                Some(names) => interfaces::existing(names),
                None => interfaces::up(),
            };
            match (wanted, lock(&state.shared)) {
                (Ok(wanted), Ok(mut s)) => {
                    let Shared {
                        probe, attachments, ..
                    } = &mut *s;
                    attachments.reconcile(probe, &wanted);
                    let labels = attachments.labels();
                    if let Ok(mut p) = lock(&state.published) {
                        p.labels = labels;
                    }
                }
                (Err(e), _) | (_, Err(e)) => log::warn!("interfaces: {e:#}"),
            }
        }
        if settings.auto_ports && started.duration_since(last_ports) >= LISTENERS_EVERY {
            last_ports = started;
            if let (Ok(mut s), Ok(mut ports)) = (lock(&state.shared), state.ports.lock()) {
                let (tracker, since) = &mut *ports;
                let now_s = since.elapsed().as_secs();
                // Ports already tracked keep their slot and counts.
                if let Err(e) = listeners::follow(tracker, &mut s.probe, now_s) {
                    log::warn!("listener ports: {e:#}");
                }
                let slots = s.probe.listener_slots();
                if let Ok(mut p) = lock(&state.published) {
                    p.listener_slots = slots;
                }
            }
        }
        if let Err(e) = scan_once(state, settings, &mut window, started) {
            log::warn!("scan: {e:#}");
        }
        // Sleep out the interval, waking often enough to stop promptly.
        while !stop.load(Ordering::Relaxed) && started.elapsed() < settings.interval {
            thread::sleep(Duration::from_millis(50).min(settings.interval));
        }
    }
}

fn scan_once(
    state: &ScanState,
    settings: &ScanSettings,
    window: &mut CounterWindow,
    started: Instant,
) -> Result<()> {
    let (slots, labels) = {
        let p = lock(&state.published)?;
        (p.listener_slots.clone(), p.labels.clone())
    };
    let tracked: Vec<u16> = slots.iter().map(|(p, _)| *p).collect();
    let young = lock(&state.shared)?.detector.thresholds().window;
    // The table and the counters are read without a lock.
    let now_ns = monotonic_ns();
    let mut summary = Summarizer::new(now_ns, settings.timeout, young, &tracked);
    state.reader.for_each(|k, st| summary.add(k, st))?;
    let (mut snap, chores) = summary.finish();
    snap.capacity = state.reader.capacity();
    match crate::sockdiag::accept_queues() {
        Ok(queues) => {
            snap.accept_queues = queues
                .into_iter()
                .filter(|(p, _)| tracked.contains(p))
                .collect();
        }
        Err(e) => log::debug!("sock_diag: {e}"),
    }
    let counters = state.counters.counters()?;
    let ports = state.counters.listeners(&slots)?;
    window.push(now_ns, counters, ports, netstat::syncookies_sent());
    let iface_slots: Vec<u32> = std::iter::once(OTHER_IFACE_SLOT)
        .chain(labels.iter().map(|(s, _)| *s))
        .collect();
    snap.ratios = ratios_by_series(window, &iface_slots);
    let signals = signals(window, &snap);
    // The new snapshot already leaves out what is about to expire: publish
    // it under the same lock as the expirations that move the timeout
    // counters, so no scrape sees a handshake both half-open and timed out.
    // A mass timeout is worked off in chunks (scrapes get in between) and
    // published with the last one.
    let chunks: Vec<&[(FlowKey, u64)]> = if chores.expire.is_empty() {
        vec![&[]]
    } else {
        chores.expire.chunks(512).collect()
    };
    let last = chunks.len() - 1;
    for (i, chunk) in chunks.into_iter().enumerate() {
        let mut s = lock(&state.shared)?;
        let mut p = lock(&state.published)?;
        for (key, syn_ns) in chunk {
            if s.probe.expire(key, *syn_ns)? {
                snap.expired += 1;
                snap.tombstones += 1;
            }
        }
        if i == last {
            for (key, syn_ns) in &chores.forget {
                if s.probe.forget(key, *syn_ns)? {
                    snap.entries -= 1;
                    snap.tombstones -= 1;
                }
            }
            for (key, syn_ns) in &chores.release {
                if s.probe.expire(key, *syn_ns)? {
                    snap.entries -= 1;
                }
            }
            snap.scan_seconds = started.elapsed().as_secs_f64();
            let t = *s.detector.thresholds();
            for (condition, transition) in s.detector.evaluate(&signals, monotonic_ns()) {
                let line = report(condition, transition, &signals, &snap, &t);
                match transition {
                    Transition::Fired => log::warn!(target: STRUCTURED, "{line}"),
                    Transition::Resolved => log::info!(target: STRUCTURED, "{line}"),
                }
            }
            p.firing = firing(&s.detector);
            p.snapshot = std::mem::take(&mut snap);
        }
    }
    Ok(())
}

/// One scrape: the counter maps read through their own handles and the
/// published state, never the lock the scanner attaches under.
fn render(published: &PublishedRef, reader: &CounterReader) -> Result<String> {
    let (counters, latency, listeners, labels, snapshot, firing) = {
        let p = lock(published)?;
        (
            reader.counters()?,
            reader.latency()?,
            reader.listeners(&p.listener_slots)?,
            p.labels.clone(),
            p.snapshot.clone(),
            p.firing.clone(),
        )
    };
    let mut families = exposition::counter_families(&counters, &labels);
    families.extend(exposition::latency_families(&latency));
    families.extend(exposition::scan_families(&snapshot, &labels));
    families.extend(exposition::listener_families(&listeners, &snapshot));
    families.extend(exposition::netstat_families(&netstat::read()));
    families.push(exposition::detector_family(&firing));
    families.push(exposition::build_info());
    exposition::encode(&families)
}
