//! The kernel side from user space: loading the programs (probe), their
//! links (links; which hook and when: attach, ingress), their maps (maps,
//! and readers for other threads), pins (pins, bpffs), the clock their
//! times are on, and their diagnostic events (diagnostics).
pub mod attach;
pub mod batch;
pub mod bpffs;
pub mod clock;
pub mod diagnostics;
pub mod ingress;
pub mod links;
pub mod mapped;
pub mod maps;
pub mod pins;
pub mod probe;
pub mod readers;
