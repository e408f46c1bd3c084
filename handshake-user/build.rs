//! Compiles the kernel programs (`handshake-ebpf`) for the bpf target on
//! every build and leaves the object in OUT_DIR, where `src/probe.rs`
//! embeds it. Needs the nightly toolchain with rust-src and bpf-linker:
//! `cargo xtask setup` installs both.
fn main() -> anyhow::Result<()> {
    let root_dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../handshake-ebpf");
    let package = aya_build::Package {
        name: "handshake-ebpf",
        root_dir,
        ..Default::default()
    };
    aya_build::build_ebpf([package], aya_build::Toolchain::Nightly)
}
