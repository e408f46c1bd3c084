//! What is served: the metric families, the kernel's own counters, and the
//! same as series over capture time.
pub mod catalog;
pub mod exposition;
pub mod netstat;
pub mod reference;
pub mod series;
