//! The sandbox helper (`clawkeep-jail`) is exec'd once for every
//! `clawkeep run`, on its start-up path: as a static PIE it skips the
//! dynamic loader (libc, libgcc_s, libm mapped and relocated on every exec).
include!("../../build/static_pie.rs");

fn main() {
    link_static_pie("clawkeep-jail");
}
