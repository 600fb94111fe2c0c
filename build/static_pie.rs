// Shared by the build scripts of the binaries that are linked as static PIEs
// (`include!`d; build scripts cannot share a crate without a build-dependency).
//
// Stable cargo cannot set `-C target-feature=+crt-static` for one binary,
// and the gnu target's std asks for `-lgcc_s -lc ...` dynamically. So the
// binary (only it: `rustc-link-arg-bin`) gets `-static-pie` and a search
// directory, searched before the system's, that holds only `.a` files for
// those names (`libgcc_s.a` is libgcc_eh.a); the linker then resolves
// every library statically. Verify with `file` (says "static-pie linked").
//
// NSS: a static glibc resolves host names through its built-in `files` and
// `dns` modules, but would dlopen any other module nsswitch.conf names, and
// such a module only works with the very glibc the binary was linked with.
// So a binary that resolves names pins its lookups to `files dns` (see the
// launcher's `main`); the others look up no names, users or groups at all.

/// Links `bin` as a static PIE when the target is linux-gnu and the static
/// archives are installed (true); otherwise warns and leaves it dynamic.
fn link_static_pie(bin: &str) -> bool {
    use std::path::{Path, PathBuf};
    use std::process::Command;

    fn gcc_file(name: &str) -> Option<PathBuf> {
        let out = Command::new("cc").arg(format!("-print-file-name={name}")).output().ok()?;
        let p = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        p.is_absolute().then_some(p)
    }

    /// The build host's glibc, as (major, minor).
    fn glibc_version() -> Option<(u32, u32)> {
        let out = Command::new("getconf").arg("GNU_LIBC_VERSION").output().ok()?;
        let text = String::from_utf8_lossy(&out.stdout);
        let (major, minor) = text.trim().strip_prefix("glibc ")?.split_once('.')?;
        Some((major.parse().ok()?, minor.split('.').next()?.parse().ok()?))
    }

    println!("cargo:rerun-if-changed=build.rs");
    if std::env::var("CARGO_CFG_TARGET_OS").as_deref() != Ok("linux") || std::env::var("CARGO_CFG_TARGET_ENV").as_deref() != Ok("gnu") {
        return false;
    }
    // The archives are found with the host's `cc`: not for a cross build.
    if std::env::var("HOST") != std::env::var("TARGET") {
        println!("cargo:warning={bin} will be dynamically linked (a cross build)");
        return false;
    }
    // From 2.34 on, libc.a holds the files and dns NSS modules itself; an
    // older one would dlopen them, which a static binary cannot do safely.
    match glibc_version() {
        Some(v) if v >= (2, 34) => {}
        v => {
            println!("cargo:warning={bin} will be dynamically linked (glibc {v:?} is older than 2.34 or unknown)");
            return false;
        }
    }
    let dir = PathBuf::from(std::env::var("OUT_DIR").unwrap_or_default()).join("static-libs");
    let _ = std::fs::create_dir_all(&dir);
    let mut missing = Vec::new();
    for (lib, from) in [
        ("gcc_s", "libgcc_eh.a"),
        ("c", "libc.a"),
        ("m", "libm.a"),
        ("pthread", "libpthread.a"),
        ("dl", "libdl.a"),
        ("rt", "librt.a"),
        ("util", "libutil.a"),
    ] {
        let link = dir.join(format!("lib{lib}.a"));
        let _ = std::fs::remove_file(&link);
        match gcc_file(from).filter(|p| Path::new(p).exists()) {
            Some(src) => {
                if std::os::unix::fs::symlink(&src, &link).is_err() {
                    missing.push(from);
                }
            }
            None => missing.push(from),
        }
    }
    if !missing.is_empty() {
        println!("cargo:warning={bin} will be dynamically linked (no {}); install libc6-dev and gcc", missing.join(", "));
        return false;
    }
    println!("cargo:rustc-link-arg-bin={bin}=-static-pie");
    println!("cargo:rustc-link-arg-bin={bin}=-L{}", dir.display());
    true
}
