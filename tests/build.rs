//! Builds the benchmarks' object: handshake-ebpf with its `bench` feature
//! (the agent's programs and the benchmarks' own), into OUT_DIR, where
//! `src/bench_object.rs` embeds it. The agent's own object, built by
//! handshake-user, has no benchmark program.
fn main() -> anyhow::Result<()> {
    let root_dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../handshake-ebpf");
    let package = aya_build::Package {
        name: "handshake-ebpf",
        root_dir,
        features: &["bench"],
        ..Default::default()
    };
    aya_build::build_ebpf([package], aya_build::Toolchain::Nightly)
}
