//! Empty on purpose: `handshake-user` build-depends on this crate so cargo
//! rebuilds the agent when the kernel programs change; the programs
//! themselves are the `handshake` binary, built for the bpf target by
//! aya-build.
#![no_std]
