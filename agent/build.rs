//! Link options of the agent's programs.

fn main() {
    // Relative relocations packed as DT_RELR (glibc 2.36+, binutils 2.38+): the dynamic
    // loader reads a few KiB instead of the 1 MiB `.rela.dyn` of plain RELA entries at every
    // start, which stays resident as part of the program image.
    println!("cargo:rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
}
