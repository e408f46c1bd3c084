//! Code generation options for the eBPF object, given to bpf-linker (which
//! runs LLVM's BPF back end; rustc only emits bitcode for this target).
//! aya-build sets its own RUSTFLAGS, so link arguments are the way in.
fn main() {
    // Packet headers sit at offsets that are not multiples of their field
    // sizes (the IPv4 header starts 14 bytes in). Without this, LLVM reads a
    // 32-bit address as four byte loads and three shifts; with it, one load.
    // The kernel allows unaligned packet reads on every architecture with
    // efficient unaligned access (x86-64, arm64) unless a program asks for
    // strict alignment; ours never does.
    println!("cargo::rustc-link-arg-bins=--cpu-features=+allows-misaligned-mem-access");
    // The same feature lets LLVM merge neighbouring stores into one wider,
    // misaligned store, and it does so on the stack (zeroing a FlowState,
    // say), where the verifier insists on alignment. Store merging is only a
    // small saving; without it every stack store keeps its own alignment.
    println!("cargo::rustc-link-arg-bins=--llvm-args=-combiner-store-merging=false");
}
