//! A root tree from a container image tarball: `docker save` output
//! (manifest.json) or an OCI image layout (index.json + blobs/).
//!
//! Layers are applied in order with the OCI whiteout rules: `.wh.NAME`
//! removes NAME, `.wh..wh..opq` empties its directory. Guarantee: nothing
//! is written or removed outside the target root — entries with `..`,
//! and paths that go through a symlink, are refused (tar's `unpack_in`
//! checks the same for what it writes).

use crate::{ImageError, Result};
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::fs;
use std::io::Read;
use std::path::{Component, Path, PathBuf};

/// Unpacks `tarball` into `work` and applies its layers into `root`.
/// Calls `on_layer(i, n, bytes)` before each layer.
pub fn unpack(tarball: &Path, work: &Path, root: &Path, mut on_layer: impl FnMut(usize, usize, u64)) -> Result<()> {
    let bad = |reason: String| ImageError::Oci { path: tarball.to_path_buf(), reason };
    let f = fs::File::open(tarball).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => {
            ImageError::InputMissing { what: "OCI tarball", path: tarball.into(), hint: "pass --from-oci with a 'docker save' tarball" }
        }
        _ => ImageError::Io { op: "open", path: tarball.into(), source: e },
    })?;
    fs::create_dir_all(work).map_err(ImageError::io("create directory", work))?;
    tar::Archive::new(f).unpack(work).map_err(|e| bad(format!("not a tar archive: {e}")))?;
    let layers = layers(work).map_err(bad)?;
    for (i, layer) in layers.iter().enumerate() {
        on_layer(i + 1, layers.len(), fs::metadata(layer).map(|m| m.len()).unwrap_or(0));
        apply_layer(layer, root).map_err(|reason| bad(format!("layer {}: {reason}", i + 1)))?;
    }
    Ok(())
}

/// The layer files of an unpacked image, bottom first.
pub fn layers(dir: &Path) -> Result<Vec<PathBuf>, String> {
    let read_json = |p: &Path| -> Result<Value, String> {
        let bytes = fs::read(p).map_err(|e| format!("{}: {e}", p.display()))?;
        serde_json::from_slice(&bytes).map_err(|e| format!("{}: {e}", p.display()))
    };
    let docker = dir.join("manifest.json");
    if docker.is_file() {
        let m = read_json(&docker)?;
        let layers = m.get(0).and_then(|e| e.get("Layers")).and_then(Value::as_array).ok_or("manifest.json has no [0].Layers")?;
        return layers
            .iter()
            .map(|l| l.as_str().ok_or_else(|| "a layer name is not a string".to_string()).and_then(|l| contained(dir, l)))
            .collect();
    }
    let index = dir.join("index.json");
    if !index.is_file() {
        return Err("neither manifest.json (docker save) nor index.json (OCI layout) in the archive".into());
    }
    let mut doc = read_json(&index)?;
    // An index may point at another index (multi-platform); follow it to a
    // manifest, preferring linux/amd64.
    for _ in 0..4 {
        let Some(list) = doc.get("manifests").and_then(Value::as_array) else { break };
        let pick = list
            .iter()
            .find(|m| m.pointer("/platform/architecture").and_then(Value::as_str) == Some("amd64"))
            .or_else(|| list.first())
            .ok_or("index.json lists no manifests")?;
        doc = read_json(&blob(dir, pick)?)?;
    }
    let layers = doc.get("layers").and_then(Value::as_array).ok_or("the image manifest has no layers")?;
    layers.iter().map(|l| blob(dir, l)).collect()
}

/// The blob a descriptor names, after checking its sha256 digest.
fn blob(dir: &Path, desc: &Value) -> Result<PathBuf, String> {
    let digest = desc.get("digest").and_then(Value::as_str).ok_or("a descriptor has no digest")?;
    let hex = digest.strip_prefix("sha256:").ok_or_else(|| format!("unsupported digest {digest}"))?;
    if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(format!("bad digest {digest}"));
    }
    let p = dir.join("blobs/sha256").join(hex);
    let mut f = fs::File::open(&p).map_err(|e| format!("blob {digest}: {e}"))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).map_err(|e| format!("blob {digest}: {e}"))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    if hex::encode(h.finalize()) != hex.to_ascii_lowercase() {
        return Err(format!("blob {digest} does not match its digest"));
    }
    Ok(p)
}

fn contained(dir: &Path, rel: &str) -> Result<PathBuf, String> {
    let clean_rel = clean(Path::new(rel)).ok_or_else(|| format!("layer path {rel} leaves the archive"))?;
    // No step of the path may be a symlink: the archive itself could
    // point one at a host file and have it read in as a layer.
    let mut p = dir.to_path_buf();
    for part in clean_rel.components() {
        p.push(part);
        if fs::symlink_metadata(&p).is_ok_and(|m| m.file_type().is_symlink()) {
            return Err(format!("layer path {rel} goes through a symlink in the archive"));
        }
    }
    Ok(p)
}

/// Applies one layer (plain or gzip tar) onto `root`.
pub fn apply_layer(layer: &Path, root: &Path) -> Result<(), String> {
    let mut f = fs::File::open(layer).map_err(|e| format!("{}: {e}", layer.display()))?;
    let mut magic = [0u8; 4];
    let n = f.read(&mut magic).map_err(|e| e.to_string())?;
    let f = fs::File::open(layer).map_err(|e| e.to_string())?;
    match &magic[..n] {
        [0x1F, 0x8B, ..] => apply_tar(flate2::read::GzDecoder::new(f), root),
        [0x28, 0xB5, 0x2F, 0xFD] => Err("zstd-compressed layers are not supported; save the image with gzip or uncompressed layers".into()),
        _ => apply_tar(f, root),
    }
}

fn apply_tar(r: impl Read, root: &Path) -> Result<(), String> {
    let mut archive = tar::Archive::new(r);
    archive.set_preserve_permissions(true);
    archive.set_preserve_ownerships(is_root());
    archive.set_unpack_xattrs(false);
    archive.set_overwrite(true);
    for entry in archive.entries().map_err(|e| e.to_string())? {
        let mut entry = entry.map_err(|e| e.to_string())?;
        let raw = entry.path().map_err(|e| e.to_string())?.into_owned();
        let Some(rel) = clean(&raw) else { return Err(format!("entry {} leaves the root", raw.display())) };
        let Some(name) = rel.file_name().map(|n| n.to_string_lossy().into_owned()) else { continue };
        let parent = rel.parent().unwrap_or(Path::new(""));
        if name == ".wh..wh..opq" {
            if let Some(dir) = resolve(root, parent)? {
                clear_dir(&dir)?;
            }
            continue;
        }
        if let Some(hidden) = name.strip_prefix(".wh.") {
            // `.wh..`, `.wh...` or a path would name something outside
            // this directory (even the root itself).
            if hidden.is_empty() || hidden == "." || hidden == ".." || hidden.contains('/') {
                return Err(format!("whiteout {} names no file in its directory", raw.display()));
            }
            if let Some(target) = resolve(root, &parent.join(hidden))? {
                remove(&target)?;
            }
            continue;
        }
        let Some(target) = resolve(root, &rel)? else { return Err(format!("entry {} goes through a symlink", rel.display())) };
        // A later layer may replace a directory with a file or the reverse.
        if let Ok(m) = fs::symlink_metadata(&target) {
            let is_dir_entry = entry.header().entry_type().is_dir();
            if !(m.is_dir() && is_dir_entry) {
                remove(&target)?;
            }
        }
        if !entry.unpack_in(root).map_err(|e| format!("{}: {}", rel.display(), error_chain(&e)))? {
            return Err(format!("entry {} leaves the root", rel.display()));
        }
    }
    Ok(())
}

/// `rel` without `.`, leading `/`; `None` when it has `..`.
fn clean(rel: &Path) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for c in rel.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::CurDir | Component::RootDir => {}
            Component::ParentDir | Component::Prefix(_) => return None,
        }
    }
    Some(out)
}

/// `root/rel` when no directory on the way is a symlink (the last
/// component may be anything); `None` when one is.
fn resolve(root: &Path, rel: &Path) -> Result<Option<PathBuf>, String> {
    let mut p = root.to_path_buf();
    let comps: Vec<_> = rel.components().collect();
    for (i, c) in comps.iter().enumerate() {
        p.push(c);
        if i + 1 < comps.len() {
            match fs::symlink_metadata(&p) {
                Ok(m) if m.file_type().is_symlink() => return Ok(None),
                Ok(_) => {}
                Err(_) => return Ok(Some(root.join(rel))),
            }
        }
    }
    Ok(Some(p))
}

fn remove(p: &Path) -> Result<(), String> {
    match fs::symlink_metadata(p) {
        Ok(m) if m.is_dir() => fs::remove_dir_all(p).map_err(|e| format!("{}: {e}", p.display())),
        Ok(_) => fs::remove_file(p).map_err(|e| format!("{}: {e}", p.display())),
        Err(_) => Ok(()),
    }
}

fn clear_dir(dir: &Path) -> Result<(), String> {
    match fs::symlink_metadata(dir) {
        Ok(m) if m.is_dir() => {}
        _ => return Ok(()),
    }
    for e in fs::read_dir(dir).map_err(|e| e.to_string())?.flatten() {
        remove(&e.path())?;
    }
    Ok(())
}

/// tar's errors hide the OS error in their source.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

#[cfg(test)]
#[path = "oci_tests.rs"]
mod tests;
