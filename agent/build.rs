//! Link options of the agent's programs.

fn main() {
    // Relative relocations packed as DT_RELR (glibc 2.36+, binutils 2.38+): the dynamic
    // loader reads a few KiB instead of the 1 MiB `.rela.dyn` of plain RELA entries at every
    // start, which stays resident as part of the program image.
    println!("cargo:rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");

    // The functions the agent runs, most executed first, laid out together at the start of
    // .text (lld's --symbol-ordering-file; rustc links with lld on x86_64 Linux). The kernel
    // maps code in blocks of at least 64 KiB around each executed page, so scattered code
    // makes most of the 17 MB program resident; packed, the resident program is about the
    // size of the code that runs. Names the build no longer has are skipped without a
    // warning; agent/tests/link_order.rs checks that the list still matches the build, and
    // scripts/agent-link-order regenerates it.
    let dir = std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=link-order.txt");
    println!(
        "cargo:rustc-link-arg-bin=outpost-agent=-Wl,--symbol-ordering-file={dir}/link-order.txt"
    );
    println!("cargo:rustc-link-arg-bin=outpost-agent=-Wl,--no-warn-symbol-ordering");
}
