//! Command line. Flags follow node_exporter's naming (`--web.listen-address`)
//! so operators find what they expect; each has an environment variable.
use std::net::SocketAddr;

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(name = "handshake-monitor", version, about = "Watches every TCP three-way handshake on this host and serves Prometheus metrics.")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Attach to interfaces and serve metrics until SIGINT or SIGTERM.
    Run(RunArgs),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum XdpMode {
    /// Native where the driver supports it, generic (skb) otherwise.
    Auto,
    /// Native (driver) mode only.
    Driver,
    /// Generic (skb) mode.
    Skb,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Interface to watch (repeatable). Default: every interface that is up, loopback included.
    #[arg(long = "iface", env = "HANDSHAKE_MONITOR_IFACE", value_delimiter = ',')]
    pub ifaces: Vec<String>,

    /// Address to serve metrics on.
    #[arg(long = "web.listen-address", env = "HANDSHAKE_MONITOR_LISTEN_ADDRESS", default_value = "127.0.0.1:9437")]
    pub listen_address: SocketAddr,

    /// Path under which to expose metrics.
    #[arg(long = "web.telemetry-path", env = "HANDSHAKE_MONITOR_TELEMETRY_PATH", default_value = "/metrics")]
    pub telemetry_path: String,

    /// Capacity of the flow table (handshakes tracked at once).
    #[arg(long = "flow-table-size", env = "HANDSHAKE_MONITOR_FLOW_TABLE_SIZE",
          default_value_t = handshake_common::DEFAULT_FLOW_TABLE_SIZE,
          value_parser = clap::value_parser!(u32).range(1024..=16_777_216))]
    pub flow_table_size: u32,

    /// How to attach the XDP program.
    #[arg(long = "xdp-mode", env = "HANDSHAKE_MONITOR_XDP_MODE", value_enum, default_value_t = XdpMode::Auto)]
    pub xdp_mode: XdpMode,

    /// Ingress only (tap mode, for mirrored traffic): no egress program.
    #[arg(long = "no-egress", env = "HANDSHAKE_MONITOR_NO_EGRESS")]
    pub no_egress: bool,
}
