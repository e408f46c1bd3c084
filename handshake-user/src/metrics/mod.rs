//! What is served: the metric families, the kernel's own counters, and the
//! same as series over capture time.
pub mod exposition;
pub mod netstat;
pub mod series;
