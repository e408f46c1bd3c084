//! The handshake-monitor agent: loads and attaches the kernel programs,
//! reads their maps and serves what it finds as Prometheus metrics.

pub mod batch;
pub mod cli;
pub mod exposition;
pub mod http;
pub mod interfaces;
pub mod privileges;
pub mod probe;
pub mod run;
