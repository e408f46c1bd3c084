//! The kernel side from user space: loading the programs and reading their
//! maps (probe), attaching them (attach, ingress), pins (bpffs), the clock
//! their times are on.
pub mod attach;
pub mod batch;
pub mod bpffs;
pub mod clock;
pub mod ingress;
pub mod mapped;
pub mod pins;
pub mod probe;
pub mod readers;
