//! Kernel modules: find a module by name in `lib/modules/<version>`, skip
//! it when it is built in (modules.builtin), and order a set of modules so
//! every dependency comes before its users.
//!
//! Dependencies come from modules.dep when the tree has one (an installed
//! kernel), else from each module's own `.modinfo` `depends=` field (a
//! freshly extracted Debian package has no modules.dep: depmod makes it at
//! install time).

use crate::{ImageError, Result};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

#[derive(Debug)]
pub struct ModuleIndex {
    dir: PathBuf,
    builtin: BTreeSet<String>,
    /// normalized name → path relative to `dir`
    paths: BTreeMap<String, String>,
    /// normalized name → dependency paths, when modules.dep exists
    dep: Option<BTreeMap<String, Vec<String>>>,
}

/// A module to load: its file and where it is in the kernel tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Module {
    pub name: String,
    pub path: PathBuf,
}

impl Module {
    /// The file name it gets in the initramfs (`dm-mod.ko`).
    pub fn file_name(&self) -> String {
        self.path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()
    }
}

/// Module names treat '-' and '_' alike (dm-mod is dm_mod).
pub fn normalize(name: &str) -> String {
    let base = name.rsplit('/').next().unwrap_or(name);
    let base = base.strip_suffix(".ko").unwrap_or(base);
    base.replace('-', "_")
}

impl ModuleIndex {
    /// Reads `dir` (a `lib/modules/<version>` directory).
    pub fn load(dir: &Path) -> Result<Self> {
        let read_opt = |f: &str| match std::fs::read_to_string(dir.join(f)) {
            Ok(s) => Ok(Some(s)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(ImageError::Io { op: "read", path: dir.join(f), source: e }),
        };
        let builtin = read_opt("modules.builtin")?.map(|s| s.lines().map(normalize).collect()).unwrap_or_default();
        let mut paths = BTreeMap::new();
        let dep = match read_opt("modules.dep")? {
            Some(text) => {
                let (p, d) = parse_modules_dep(&text);
                paths = p;
                Some(d)
            }
            None => {
                walk_ko(dir, dir, &mut paths)?;
                None
            }
        };
        Ok(ModuleIndex { dir: dir.to_path_buf(), builtin, paths, dep })
    }

    pub fn is_builtin(&self, name: &str) -> bool {
        self.builtin.contains(&normalize(name))
    }

    pub fn has(&self, name: &str) -> bool {
        self.paths.contains_key(&normalize(name))
    }

    /// `wanted` and everything they depend on, dependencies first, skipping
    /// built-in modules. A wanted module that is neither built in nor
    /// present is an error unless `optional` names it (then it is skipped).
    pub fn resolve(&self, wanted: &[&str], optional: &[&str]) -> Result<Vec<Module>> {
        let mut order = Vec::new();
        let mut seen = BTreeSet::new();
        for w in wanted {
            let n = normalize(w);
            if self.builtin.contains(&n) {
                continue;
            }
            if !self.paths.contains_key(&n) {
                if optional.iter().any(|o| normalize(o) == n) {
                    continue;
                }
                return Err(ImageError::ModuleMissing { module: w.to_string(), dir: self.dir.clone() });
            }
            self.visit(&n, &mut seen, &mut Vec::new(), &mut order)?;
        }
        Ok(order)
    }

    fn visit(&self, name: &str, seen: &mut BTreeSet<String>, stack: &mut Vec<String>, order: &mut Vec<Module>) -> Result<()> {
        if seen.contains(name) || self.builtin.contains(name) {
            return Ok(());
        }
        if stack.iter().any(|s| s == name) {
            return Err(ImageError::BadModule {
                path: self.dir.join(name),
                reason: format!("dependency cycle through {}", stack.join(" -> ")),
            });
        }
        let rel = self.paths.get(name).ok_or_else(|| ImageError::ModuleMissing { module: name.into(), dir: self.dir.clone() })?;
        stack.push(name.to_string());
        for d in self.deps_of(name, rel)? {
            self.visit(&d, seen, stack, order)?;
        }
        stack.pop();
        seen.insert(name.to_string());
        order.push(Module { name: name.to_string(), path: self.dir.join(rel) });
        Ok(())
    }

    fn deps_of(&self, name: &str, rel: &str) -> Result<Vec<String>> {
        if let Some(dep) = &self.dep {
            return Ok(dep.get(name).cloned().unwrap_or_default().iter().map(|p| normalize(p)).collect());
        }
        let path = self.dir.join(rel);
        let bytes = std::fs::read(&path).map_err(ImageError::io("read", &path))?;
        let info = modinfo(&bytes).map_err(|reason| ImageError::BadModule { path: path.clone(), reason })?;
        Ok(info
            .iter()
            .filter_map(|kv| kv.strip_prefix("depends="))
            .flat_map(|v| v.split(','))
            .filter(|s| !s.is_empty())
            .map(normalize)
            .collect())
    }
}

/// modules.dep lines are `path: dep-path dep-path ...`.
pub fn parse_modules_dep(text: &str) -> (BTreeMap<String, String>, BTreeMap<String, Vec<String>>) {
    let mut paths = BTreeMap::new();
    let mut deps = BTreeMap::new();
    for line in text.lines() {
        let Some((m, rest)) = line.split_once(':') else { continue };
        let name = normalize(m.trim());
        paths.insert(name.clone(), m.trim().to_string());
        deps.insert(name, rest.split_whitespace().map(str::to_string).collect());
    }
    (paths, deps)
}

fn walk_ko(root: &Path, dir: &Path, out: &mut BTreeMap<String, String>) -> Result<()> {
    for e in std::fs::read_dir(dir).map_err(ImageError::io("list", dir))? {
        let e = e.map_err(ImageError::io("list", dir))?;
        let p = e.path();
        let ft = e.file_type().map_err(ImageError::io("inspect", &p))?;
        if ft.is_dir() {
            walk_ko(root, &p, out)?;
        } else if p.extension().is_some_and(|x| x == "ko") {
            if let Ok(rel) = p.strip_prefix(root) {
                out.entry(normalize(&rel.to_string_lossy())).or_insert_with(|| rel.to_string_lossy().into_owned());
            }
        }
    }
    Ok(())
}

/// The `key=value` strings of an ELF64 little-endian module's .modinfo.
pub fn modinfo(elf: &[u8]) -> Result<Vec<String>, String> {
    let u16_at = |o: usize| elf.get(o..o + 2).map(|b| u16::from_le_bytes([b[0], b[1]]) as usize);
    let u32_at = |o: usize| elf.get(o..o + 4).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize);
    let u64_at = |o: usize| elf.get(o..o + 8).and_then(|b| usize::try_from(u64::from_le_bytes(b.try_into().ok()?)).ok());
    if elf.get(..6) != Some(b"\x7fELF\x02\x01") {
        return Err("not a 64-bit little-endian ELF file (compressed module?)".into());
    }
    let short = || "truncated ELF header".to_string();
    let shoff = u64_at(0x28).ok_or_else(short)?;
    let shentsize = u16_at(0x3A).ok_or_else(short)?;
    let shnum = u16_at(0x3C).ok_or_else(short)?;
    let shstrndx = u16_at(0x3E).ok_or_else(short)?;
    let section = |i: usize| -> Option<(usize, usize, usize)> {
        let s = shoff.checked_add(i.checked_mul(shentsize)?)?;
        Some((u32_at(s)?, u64_at(s + 0x18)?, u64_at(s + 0x20)?))
    };
    let (_, str_off, str_size) = section(shstrndx).ok_or_else(short)?;
    let names = elf.get(str_off..str_off.checked_add(str_size).ok_or_else(short)?).ok_or_else(short)?;
    for i in 0..shnum {
        let (name_off, off, size) = section(i).ok_or_else(short)?;
        let name = names.get(name_off..).and_then(|n| n.split(|&b| b == 0).next()).unwrap_or_default();
        if name == b".modinfo" {
            let data = elf.get(off..off.checked_add(size).ok_or_else(short)?).ok_or_else(short)?;
            return Ok(data.split(|&b| b == 0).filter(|s| !s.is_empty()).map(|s| String::from_utf8_lossy(s).into_owned()).collect());
        }
    }
    Err("no .modinfo section".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEP: &str = "\
kernel/fs/ext4/ext4.ko: kernel/lib/crc16.ko kernel/fs/mbcache.ko kernel/fs/jbd2/jbd2.ko
kernel/fs/mbcache.ko:
kernel/fs/jbd2/jbd2.ko:
kernel/lib/crc16.ko:
kernel/drivers/md/dm-verity.ko: kernel/drivers/md/dm-bufio.ko kernel/drivers/md/dm-mod.ko
kernel/drivers/md/dm-bufio.ko: kernel/drivers/md/dm-mod.ko
kernel/drivers/md/dm-mod.ko:
kernel/drivers/block/virtio_blk.ko: kernel/drivers/virtio/virtio_ring.ko kernel/drivers/virtio/virtio.ko
kernel/drivers/virtio/virtio_ring.ko:
kernel/drivers/virtio/virtio.ko:
";

    fn tree(builtin: &str) -> tempfile::TempDir {
        let t = tempfile::tempdir().unwrap();
        std::fs::write(t.path().join("modules.dep"), DEP).unwrap();
        std::fs::write(t.path().join("modules.builtin"), builtin).unwrap();
        t
    }

    fn names(m: &[Module]) -> Vec<String> {
        m.iter().map(Module::file_name).collect()
    }

    #[test]
    fn dependencies_come_first_and_once() {
        let t = tree("");
        let idx = ModuleIndex::load(t.path()).unwrap();
        let order = idx.resolve(&["dm-verity", "ext4", "dm_mod", "virtio_blk"], &[]).unwrap();
        let n = names(&order);
        assert_eq!(
            n,
            [
                "dm-mod.ko",
                "dm-bufio.ko",
                "dm-verity.ko",
                "crc16.ko",
                "mbcache.ko",
                "jbd2.ko",
                "ext4.ko",
                "virtio_ring.ko",
                "virtio.ko",
                "virtio_blk.ko"
            ]
        );
        for (i, m) in order.iter().enumerate() {
            assert!(!order[i + 1..].iter().any(|o| o.name == m.name), "{} twice", m.name);
        }
    }

    #[test]
    fn builtin_and_optional_modules_are_skipped() {
        let t = tree("kernel/fs/jbd2/jbd2.ko\nkernel/lib/crc16.ko\n");
        let idx = ModuleIndex::load(t.path()).unwrap();
        let n = names(&idx.resolve(&["ext4", "vsock"], &["vsock"]).unwrap());
        assert_eq!(n, ["mbcache.ko", "ext4.ko"]);
        assert!(matches!(idx.resolve(&["vsock"], &[]), Err(ImageError::ModuleMissing { .. })));
    }

    #[test]
    fn modinfo_of_a_real_module() {
        let Some(dir) = crate::kernel::cached_modules_dir() else {
            println!("skipped: modinfo_of_a_real_module: no extracted kernel (run .ci/fetch-kernel)");
            return;
        };
        let idx = ModuleIndex::load(&dir).unwrap();
        let order = idx.resolve(&["virtio_blk"], &[]).unwrap();
        let n = names(&order);
        assert_eq!(n.last().map(String::as_str), Some("virtio_blk.ko"));
        assert!(n.contains(&"virtio.ko".to_string()) || idx.is_builtin("virtio"), "{n:?}");
    }
}
