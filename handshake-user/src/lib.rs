//! The handshake-monitor agent: loads and attaches the kernel programs,
//! reads their maps and serves what it finds as Prometheus metrics.
//!
//! The parts, by concern:
//!
//! | folder | |
//! | --- | --- |
//! | `cmd` | the commands `run`, `check`, `cleanup` |
//! | `replay` | `replay`: captures (pcap, pcapng) through the same programs |
//! | `kernel` | the programs and their maps: load, attach, pins, the clock |
//! | `detect` | the flow-table scan, counter windows, the built-in detector |
//! | `metrics` | the metric families served, the kernel's own counters, series |
//! | `host` | interfaces, listening ports, privileges |
//! | `web` | the metrics endpoint: HTTP, TLS, basic auth |
//!
//! `cli`, `config` and `logging` are the command line, its config file and
//! the log format. Each module is also re-exported at the crate root, the
//! paths the tests and benchmarks use.

pub mod cli;
pub mod cmd;
pub mod config;
pub mod detect;
pub mod host;
pub mod kernel;
pub mod logging;
pub mod metrics;
pub mod replay;
pub mod web;

pub use cmd::{check, cleanup, run};
pub use detect::{detector, scan, signals, sources, window};
pub use host::{interfaces, listeners, privileges, sockdiag};
pub use kernel::{attach, batch, bpffs, clock, ingress, mapped, probe};
pub use metrics::{exposition, netstat, series};
pub use replay::pcap;
