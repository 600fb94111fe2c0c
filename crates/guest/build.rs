//! The guest binary is /init of an initramfs that has no libc, so it is
//! linked as a static PIE against glibc's static archives (libc6-dev).
include!("../../build/static_pie.rs");

fn main() {
    link_static_pie("clawkeep-guest");
}
