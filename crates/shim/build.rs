//! The shim runs once for every gated command an agent runs, so its exec is
//! part of the gate's overhead: as a static PIE it skips the dynamic loader
//! (libc, libgcc_s, libm mapped and relocated on every exec).
include!("../../build/static_pie.rs");

fn main() {
    link_static_pie("clawkeep-shim");
}
