//! Command line. Flags follow node_exporter's naming (`--web.listen-address`)
//! so operators find what they expect; each has an environment variable and
//! a key in the optional TOML `--config` file. Precedence: flag, then
//! environment, then config file, then default.
use std::{net::SocketAddr, path::PathBuf, time::Duration};

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(
    name = "handshake-monitor",
    version,
    about = "Watches every TCP three-way handshake on this host and serves Prometheus metrics."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Attach to interfaces and serve metrics until SIGINT or SIGTERM.
    Run(Box<RunArgs>),
    /// Say, in plain words, whether this host can run the agent.
    Check(CheckArgs),
    /// Detach and delete what `run --pin-path` left pinned.
    Cleanup(CleanupArgs),
    /// Run a capture (pcap or pcapng) through the same kernel programs and
    /// report what the monitor would have said about it.
    Replay(ReplayArgs),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ReplayFormat {
    /// The funnel, latencies, listeners and the detector's lines.
    Table,
    Json,
    /// The final counters as a scrape would show them.
    Prometheus,
    /// Every metric at every --step of capture time, timestamped, for
    /// `promtool tsdb create-blocks-from openmetrics`.
    Openmetrics,
    /// The same series as the `interval` and `input_series` of a
    /// `promtool test rules` file.
    Promtool,
}

#[derive(Debug, Args)]
pub struct ReplayArgs {
    /// The capture: pcap or pcapng; Ethernet, Linux cooked (SLL, SLL2) or raw IP.
    pub file: PathBuf,

    #[arg(long, value_enum, default_value_t = ReplayFormat::Table)]
    pub format: ReplayFormat,

    /// Handshakes older than this (in capture time) time out, as live.
    #[arg(long = "handshake-timeout", default_value = "30s", value_parser = parse_duration)]
    pub handshake_timeout: Duration,

    /// Ports with their own per-listener rows. Default: the ports that
    /// received SYNs in the capture, most first (up to 64).
    #[arg(long = "listener-ports", value_delimiter = ',', value_parser = clap::value_parser!(u16).range(1..))]
    pub listener_ports: Vec<u16>,

    #[arg(long = "flow-table-size", default_value_t = handshake_common::DEFAULT_FLOW_TABLE_SIZE,
          value_parser = clap::value_parser!(u32).range(1024..=16_777_216))]
    pub flow_table_size: u32,

    /// Show progress on stderr (default: for large files on a terminal).
    #[arg(long)]
    pub progress: bool,

    /// Before the report, one line per handshake segment: the frame, the
    /// flow, the verdict (the counters it moved) and, for an invalid one,
    /// what was expected and what came.
    #[arg(long)]
    pub explain: bool,

    /// Capture time between two samples of --format openmetrics or promtool.
    #[arg(long, default_value = "15s", value_parser = parse_duration)]
    pub step: Duration,

    #[command(flatten)]
    pub detector: DetectorArgs,
}

/// Where the ingress program runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum IngressHook {
    /// XDP where the driver runs it natively (a NIC), TC (TCX) elsewhere:
    /// on veth, on lo, and where native XDP is refused. There generic XDP
    /// would copy every cloned skb (each TCP segment a host sends itself)
    /// before the program even runs; TC reads the skb as it is.
    Auto,
    /// XDP always, in `--xdp-mode`.
    Xdp,
    /// TC (TCX) ingress always.
    Tc,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum XdpMode {
    /// Native where the driver supports it, generic (skb) otherwise, and on
    /// veth (where generic is cheaper than native for a host's own traffic).
    Auto,
    /// Native (driver) mode only.
    Driver,
    /// Generic (skb) mode.
    Skb,
}

/// `30s`, `1m30s`, `250ms`: humantime durations, at least 1 ms and at most
/// a day (no setting of the agent means anything longer).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let d =
        humantime::parse_duration(s).map_err(|e| format!("{e} (expected e.g. 30s, 2m, 500ms)"))?;
    if d < Duration::from_millis(1) {
        return Err("must be at least 1ms".to_owned());
    }
    if d > Duration::from_secs(86_400) {
        return Err("must be at most 24h".to_owned());
    }
    Ok(d)
}

/// The scan period: at least 100 ms (each scan reads the whole table).
fn parse_scan_interval(s: &str) -> Result<Duration, String> {
    let d = parse_duration(s)?;
    if d < Duration::from_millis(100) {
        return Err("must be at least 100ms (each scan reads the whole flow table)".to_owned());
    }
    Ok(d)
}

fn parse_path(s: &str) -> Result<String, String> {
    if s.starts_with('/') {
        Ok(s.to_owned())
    } else {
        Err("must start with '/'".to_owned())
    }
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// TOML file with any of these options (keys as the flags, without `--`).
    #[arg(long, env = "HANDSHAKE_MONITOR_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Interface to watch (repeatable, or comma-separated). Default: every
    /// interface that is up, loopback included, followed as they come and go.
    #[arg(
        long = "iface",
        env = "HANDSHAKE_MONITOR_IFACE",
        value_delimiter = ',',
        value_name = "NAME"
    )]
    pub ifaces: Vec<String>,

    /// Address to serve metrics on.
    #[arg(
        long = "web.listen-address",
        env = "HANDSHAKE_MONITOR_LISTEN_ADDRESS",
        default_value = "127.0.0.1:9437"
    )]
    pub listen_address: SocketAddr,

    /// The exporter-toolkit web config (YAML): TLS, client certificates and
    /// basic auth for the metrics endpoint, as node_exporter takes it.
    #[arg(
        long = "web.config.file",
        env = "HANDSHAKE_MONITOR_WEB_CONFIG_FILE",
        value_name = "FILE"
    )]
    pub web_config_file: Option<PathBuf>,

    /// Path under which to expose metrics.
    #[arg(long = "web.telemetry-path", env = "HANDSHAKE_MONITOR_TELEMETRY_PATH", default_value = "/metrics", value_parser = parse_path)]
    pub telemetry_path: String,

    /// A handshake not completed after this long is counted as a timeout and forgotten.
    #[arg(long = "handshake-timeout", env = "HANDSHAKE_MONITOR_HANDSHAKE_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    pub handshake_timeout: Duration,

    /// Capacity of the flow table (handshakes tracked at once), rounded up to
    /// a power-of-two number of 8-way buckets.
    #[arg(long = "flow-table-size", env = "HANDSHAKE_MONITOR_FLOW_TABLE_SIZE",
          default_value_t = handshake_common::DEFAULT_FLOW_TABLE_SIZE,
          value_parser = clap::value_parser!(u32).range(1024..=16_777_216))]
    pub flow_table_size: u32,

    /// New flow-table entries allowed per CPU per 100 ms; 0, the default,
    /// is no limit. A limit caps the CPU a SYN flood costs, but once it is
    /// spent real SYNs go untracked too (counted as syn_untracked). Without
    /// one, the table's eviction order keeps answered handshakes through
    /// floods of many times its size (see BENCHMARKS.md, B4).
    #[arg(
        long = "syn-insert-budget",
        env = "HANDSHAKE_MONITOR_SYN_INSERT_BUDGET",
        default_value_t = 0,
        value_name = "N"
    )]
    pub syn_insert_budget: u64,

    /// Where the ingress program runs: XDP or TC. Auto: XDP where the
    /// driver runs it natively, TC where XDP would be generic (veth, lo).
    /// An explicit --xdp-mode driver or skb means XDP.
    #[arg(long = "ingress-hook", env = "HANDSHAKE_MONITOR_INGRESS_HOOK", value_enum, default_value_t = IngressHook::Auto)]
    pub ingress_hook: IngressHook,

    /// How to attach the XDP program, when ingress runs on XDP.
    #[arg(long = "xdp-mode", env = "HANDSHAKE_MONITOR_XDP_MODE", value_enum, default_value_t = XdpMode::Auto)]
    pub xdp_mode: XdpMode,

    /// Ingress only (tap mode, for mirrored traffic): no egress program.
    #[arg(long = "no-egress", env = "HANDSHAKE_MONITOR_NO_EGRESS")]
    pub no_egress: bool,

    /// Server ports that get their own per-listener series (comma-separated).
    /// Default: the host's listening TCP ports, followed as they change.
    /// Every other port is counted under port="other".
    #[arg(long = "listener-ports", env = "HANDSHAKE_MONITOR_LISTENER_PORTS", value_delimiter = ',', value_name = "PORT",
          value_parser = clap::value_parser!(u16).range(1..))]
    pub listener_ports: Vec<u16>,

    /// Window of the completion and SYN-ACK ratio gauges.
    #[arg(long = "ratio-window", env = "HANDSHAKE_MONITOR_RATIO_WINDOW", default_value = "60s", value_parser = parse_duration)]
    pub ratio_window: Duration,

    /// bpffs directory to pin maps and links in: a restarted agent adopts
    /// them and its counters continue; the programs stay attached meanwhile.
    #[arg(
        long = "pin-path",
        env = "HANDSHAKE_MONITOR_PIN_PATH",
        value_name = "DIR"
    )]
    pub pin_path: Option<PathBuf>,

    /// How often the flow table is scanned for ages and timeouts.
    #[arg(long = "scan-interval", env = "HANDSHAKE_MONITOR_SCAN_INTERVAL", default_value = "1s", value_parser = parse_scan_interval)]
    pub scan_interval: Duration,

    #[command(flatten)]
    pub detector: DetectorArgs,

    #[command(flatten)]
    pub log: LogArgs,
}

/// Logging, as node_exporter's flags.
#[derive(Debug, Clone, Args)]
pub struct LogArgs {
    /// Only log messages with this severity or above (RUST_LOG, if set,
    /// overrides it).
    #[arg(long = "log.level", env = "HANDSHAKE_MONITOR_LOG_LEVEL", value_enum,
          default_value_t = crate::logging::Level::Info)]
    pub log_level: crate::logging::Level,

    /// Log line format: logfmt, or one JSON object per line.
    #[arg(long = "log.format", env = "HANDSHAKE_MONITOR_LOG_FORMAT", value_enum,
          default_value_t = crate::logging::Format::Logfmt)]
    pub log_format: crate::logging::Format,
}

/// The built-in detector's settings, for `run` and `replay`.
#[derive(Debug, Clone, Args)]
pub struct DetectorArgs {
    /// Detector: half-open handshakes that, sustained, raise the buildup alarm.
    #[arg(
        long = "detector.half-open-threshold",
        env = "HANDSHAKE_MONITOR_DETECTOR_HALF_OPEN_THRESHOLD",
        default_value_t = 1000
    )]
    pub detector_half_open: u64,

    /// Detector: completion ratio under which, sustained, the collapse alarm is raised.
    #[arg(
        long = "detector.completion-ratio",
        env = "HANDSHAKE_MONITOR_DETECTOR_COMPLETION_RATIO",
        default_value_t = 0.5
    )]
    pub detector_completion_ratio: f64,

    /// Detector: attempts per second (not refused) below which the completion
    /// ratio is not judged; also the rate of refusals on ports nobody listens
    /// on that counts as a scan.
    #[arg(
        long = "detector.min-syn-rate",
        env = "HANDSHAKE_MONITOR_DETECTOR_MIN_SYN_RATE",
        default_value_t = 10.0
    )]
    pub detector_min_syn_rate: f64,

    /// Detector: how long a condition must hold (or be gone) before it is reported.
    #[arg(long = "detector.for", env = "HANDSHAKE_MONITOR_DETECTOR_FOR", default_value = "10s", value_parser = parse_duration)]
    pub detector_for: Duration,

    /// Detector: the trailing window its rates and ratios are taken over.
    #[arg(long = "detector.window", env = "HANDSHAKE_MONITOR_DETECTOR_WINDOW", default_value = "5s", value_parser = parse_duration)]
    pub detector_window: Duration,
}

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// Interfaces to check (default: every interface that is up).
    #[arg(long = "iface", value_delimiter = ',')]
    pub ifaces: Vec<String>,
}

#[derive(Debug, Args)]
pub struct CleanupArgs {
    /// The directory given to `run --pin-path`.
    #[arg(long = "pin-path", env = "HANDSHAKE_MONITOR_PIN_PATH")]
    pub pin_path: PathBuf,
}
