//! The launcher is exec'd for every `clawkeep` command, and for `run` its
//! exec is the first step of the sandbox's start-up: as a static PIE it
//! skips the dynamic loader (libc, libgcc_s, libm mapped and relocated on
//! every exec). When it is static, `main` pins host-name lookups to the
//! NSS modules built into the static glibc (`static_glibc`).
include!("../../build/static_pie.rs");

fn main() {
    println!("cargo:rustc-check-cfg=cfg(static_glibc)");
    // Both or neither: `static_glibc` is one cfg for the whole crate.
    if link_static_pie("clawkeep") && link_static_pie("clawkeep-full") {
        println!("cargo:rustc-cfg=static_glibc");
    }
}
