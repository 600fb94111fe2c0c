//! The guest agent is `/init` of an initramfs that has no libc: it must be
//! a static executable. (This test is also what makes `cargo test
//! --workspace` build the binary that the image and VM tests pack.)

/// The ELF program header types of `path` (64-bit little-endian only).
fn program_headers(path: &str) -> Vec<u32> {
    let elf = std::fs::read(path).unwrap_or_else(|e| panic!("cannot read {path}: {e}"));
    assert_eq!(&elf[..4], b"\x7fELF", "{path} is not an ELF file");
    assert_eq!(elf[4], 2, "{path} is not a 64-bit ELF");
    let u16_at = |o: usize| u16::from_le_bytes([elf[o], elf[o + 1]]) as usize;
    let phoff = u64::from_le_bytes(elf[0x20..0x28].try_into().unwrap_or_default()) as usize;
    let (size, count) = (u16_at(0x36), u16_at(0x38));
    (0..count).map(|i| u32::from_le_bytes(elf[phoff + i * size..phoff + i * size + 4].try_into().unwrap_or_default())).collect()
}

#[test]
fn the_guest_agent_needs_no_dynamic_loader() {
    const PT_LOAD: u32 = 1;
    const PT_INTERP: u32 = 3;
    let headers = program_headers(env!("CARGO_BIN_EXE_clawkeep-guest"));
    assert!(headers.contains(&PT_LOAD), "no loadable segment: {headers:?}");
    assert!(!headers.contains(&PT_INTERP), "clawkeep-guest asks for a dynamic loader; see crates/guest/build.rs");
}
