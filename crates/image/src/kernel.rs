//! Which kernel an image boots, and where its modules are.
//!
//! In order: `--kernel PATH` (modules from `--modules DIR`, else
//! `<dir of kernel>/../lib/modules/<version>`, which is right both for
//! /boot/vmlinuz-* and for an extracted .deb tree); else the Debian kernel
//! extracted in the cache (`$CLAWKEEP_KERNEL_DIR`, default
//! /var/cache/clawkeep/kernel); else that cache is filled with
//! `apt-get download` + `dpkg-deb -x`, as .ci/fetch-kernel does.

use crate::progress::Progress;
use crate::{bzimage, ImageError, Result};
use std::path::{Path, PathBuf};
use std::process::Command;

pub const KERNEL_DIR_ENV: &str = "CLAWKEEP_KERNEL_DIR";
pub const DEFAULT_KERNEL_DIR: &str = "/var/cache/clawkeep/kernel";

#[derive(Debug, Clone)]
pub struct Kernel {
    pub bzimage: PathBuf,
    pub version: String,
    pub modules: PathBuf,
}

/// `$CLAWKEEP_KERNEL_DIR` or /var/cache/clawkeep/kernel.
pub fn cache_dir() -> PathBuf {
    std::env::var_os(KERNEL_DIR_ENV).filter(|v| !v.is_empty()).map(PathBuf::from).unwrap_or_else(|| PathBuf::from(DEFAULT_KERNEL_DIR))
}

/// The newest `boot/vmlinuz-*` in the cache, if any.
pub fn cached_kernel() -> Option<PathBuf> {
    let boot = cache_dir().join("boot");
    let mut found: Vec<PathBuf> = std::fs::read_dir(&boot)
        .ok()?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("vmlinuz-")))
        .collect();
    found.sort();
    found.pop()
}

/// The modules directory of the cached kernel, if any.
pub fn cached_modules_dir() -> Option<PathBuf> {
    let k = cached_kernel()?;
    let version = bzimage::read_version(&k).ok()?;
    let d = modules_beside(&k, &version);
    d.is_dir().then_some(d)
}

fn modules_beside(kernel: &Path, version: &str) -> PathBuf {
    let dir = kernel.parent().unwrap_or(Path::new("/"));
    dir.join("..").join("lib/modules").join(version)
}

/// Finds (or fetches) the kernel and its modules.
pub fn locate(kernel: Option<&Path>, modules: Option<&Path>, progress: &Progress) -> Result<Kernel> {
    let bzimage = match kernel {
        Some(k) if k.is_file() => k.to_path_buf(),
        Some(k) => {
            return Err(ImageError::KernelNotFound {
                path: k.to_path_buf(),
                hint: format!(
                    "pass --kernel with a bzImage (e.g. /boot/vmlinuz-*), or omit it to use the Debian kernel in {}",
                    cache_dir().display()
                ),
            })
        }
        None => match cached_kernel() {
            Some(k) => k,
            None => {
                progress.note(&format!("no kernel in {}; fetching Debian's linux-image-amd64", cache_dir().display()));
                fetch(&cache_dir(), progress)?;
                cached_kernel().ok_or_else(|| ImageError::KernelNotFound {
                    path: cache_dir().join("boot"),
                    hint: "the fetched package has no boot/vmlinuz-*; pass --kernel PATH".into(),
                })?
            }
        },
    };
    let version = bzimage::read_version(&bzimage)?;
    let modules = match modules {
        Some(m) => m.to_path_buf(),
        None => modules_beside(&bzimage, &version),
    };
    if !modules.is_dir() {
        return Err(ImageError::ModulesNotFound { version, path: modules });
    }
    progress.note(&format!("kernel {version}: {}", bzimage.display()));
    Ok(Kernel { bzimage, version, modules })
}

/// Downloads linux-image-amd64's versioned package and extracts it into
/// `dest` (replaced whole, via a temporary directory beside it).
pub fn fetch(dest: &Path, progress: &Progress) -> Result<()> {
    let fail = |step: &str, detail: String| ImageError::KernelFetch { step: step.into(), detail };
    let depends =
        run("apt-cache", Command::new("apt-cache").args(["depends", "linux-image-amd64"])).map_err(|d| fail("apt-cache depends", d))?;
    let package = depends
        .lines()
        .filter_map(|l| l.trim().strip_prefix("Depends:"))
        .map(str::trim)
        .find(|p| p.starts_with("linux-image-") && p.as_bytes().get(12).is_some_and(u8::is_ascii_digit))
        .ok_or_else(|| fail("apt-cache depends", "linux-image-amd64 names no versioned package; run apt-get update".into()))?
        .to_string();
    let parent = dest.parent().unwrap_or(Path::new("/"));
    std::fs::create_dir_all(parent).map_err(|e| fail("create cache directory", format!("{}: {e}", parent.display())))?;
    let work = parent.join(format!(".kernel-fetch-{}", std::process::id()));
    let staged = parent.join(format!(".kernel-{}", std::process::id()));
    let result = (|| {
        std::fs::create_dir_all(&work).map_err(|e| fail("create work directory", e.to_string()))?;
        progress.note(&format!("apt-get download {package}"));
        run("apt-get", Command::new("apt-get").args(["download", "-q", &package]).current_dir(&work))
            .map_err(|d| fail("apt-get download", d))?;
        for deb in std::fs::read_dir(&work).map_err(|e| fail("list downloads", e.to_string()))?.flatten() {
            progress.note(&format!("dpkg-deb -x {}", deb.file_name().to_string_lossy()));
            run("dpkg-deb", Command::new("dpkg-deb").arg("-x").arg(deb.path()).arg(&staged)).map_err(|d| fail("dpkg-deb -x", d))?;
        }
        let _ = std::fs::remove_dir_all(dest);
        std::fs::rename(&staged, dest).map_err(|e| fail("move into place", format!("{}: {e}", dest.display())))
    })();
    let _ = std::fs::remove_dir_all(&work);
    let _ = std::fs::remove_dir_all(&staged);
    result
}

/// Runs a command; its stdout, or a one-line reason it failed.
fn run(tool: &str, cmd: &mut Command) -> Result<String, String> {
    let out = cmd.output().map_err(|e| format!("cannot run {tool}: {e}"))?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        let last = err.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("no message");
        return Err(format!("{tool} exited with {}: {last}", out.status));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_explicit_missing_kernel_is_a_usage_error() {
        let err = locate(Some(Path::new("/nonexistent/vmlinuz")), None, &Progress::silent()).unwrap_err();
        assert!(err.is_usage());
        assert!(err.to_string().contains("/nonexistent/vmlinuz"), "{err}");
    }

    #[test]
    fn modules_are_looked_up_beside_the_kernel() {
        assert_eq!(modules_beside(Path::new("/x/boot/vmlinuz-6.1"), "6.1"), Path::new("/x/boot/../lib/modules/6.1"));
    }
}
