//! The handshake-monitor agent: loads and attaches the kernel programs,
//! reads their maps and serves what it finds as Prometheus metrics.

pub mod attach;
pub mod batch;
pub mod bpffs;
pub mod check;
pub mod cleanup;
pub mod cli;
pub mod clock;
pub mod config;
pub mod detector;
pub mod exposition;
pub mod ingress;
pub mod interfaces;
pub mod listeners;
pub mod logging;
pub mod mapped;
pub mod netstat;
pub mod pcap;
pub mod privileges;
pub mod probe;
pub mod replay;
pub mod run;
pub mod scan;
pub mod series;
pub mod signals;
pub mod sources;
pub mod web;
pub mod window;
