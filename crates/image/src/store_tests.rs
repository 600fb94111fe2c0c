use super::*;
use crate::manifest::{cmdline_for, INITRAMFS_FILE, KERNEL_FILE, ROOTFS_FILE};

/// A store with one image "img" made of small fake parts.
fn fixture() -> (tempfile::TempDir, ImageStore) {
    let t = tempfile::tempdir().unwrap();
    let store = ImageStore::new(t.path());
    let dir = store.image_dir("img").unwrap();
    private_fs::ensure_dir(&dir).unwrap();
    let part = |file: &str, data: &[u8]| {
        private_fs::write(&dir.join(file), data).unwrap();
        let (sha256, size) = private_fs::sha256_file(&dir.join(file)).unwrap();
        Part { file: file.into(), sha256, size }
    };
    // The sample manifest, with parts that exist and hash as recorded.
    let mut m = crate::manifest::sample();
    m.name = "img".into();
    m.kernel = part(KERNEL_FILE, b"kernel");
    m.initramfs = part(INITRAMFS_FILE, b"initramfs");
    let r = part(ROOTFS_FILE, &[7u8; 3 * 4096]);
    (m.rootfs.file, m.rootfs.sha256, m.rootfs.size) = (r.file, r.sha256, r.size);
    m.cmdline = cmdline_for(&m.rootfs);
    private_fs::write(&dir.join(MANIFEST_FILE), &serde_json::to_vec_pretty(&m).unwrap()).unwrap();
    (t, store)
}

fn key(b: u8) -> SigningKey {
    SigningKey::from_bytes(&[b; 32])
}

#[test]
fn an_intact_image_verifies() {
    let (_t, store) = fixture();
    let img = store.open("img").unwrap();
    let v = img.verify(None).unwrap();
    // The kernel handed on is the open file that was hashed, not a path
    // someone could swap afterwards.
    assert!(v.kernel.starts_with("/proc/self/fd/"), "{}", v.kernel.display());
    let through_fd = std::fs::read(&v.kernel).unwrap();
    let swapped = store.open("img").unwrap().dir().join("vmlinuz");
    let original = std::fs::read(&swapped).unwrap();
    std::fs::remove_file(&swapped).unwrap();
    std::fs::write(&swapped, b"not the kernel that was verified").unwrap();
    assert_eq!(std::fs::read(&v.kernel).unwrap(), through_fd);
    assert_eq!(through_fd, original);
    assert!(v.cmdline.contains("clawkeep.roothash="));
    assert!(v.vmlinux.is_none());
}

#[test]
fn a_symlinked_part_is_refused() {
    let (_t, store) = fixture();
    let dir = store.open("img").unwrap().dir().to_path_buf();
    let real = dir.join("vmlinuz.real");
    std::fs::rename(dir.join("vmlinuz"), &real).unwrap();
    std::os::unix::fs::symlink(&real, dir.join("vmlinuz")).unwrap();
    let err = store.open("img").unwrap().verify(None).unwrap_err().to_string();
    assert!(err.contains("symlink"), "{err}");
}

#[test]
fn a_modified_part_is_named() {
    let (_t, store) = fixture();
    let img = store.open("img").unwrap();
    std::fs::write(img.dir().join(INITRAMFS_FILE), b"initramfX").unwrap();
    let err = img.verify(None).unwrap_err();
    assert!(matches!(err, ImageError::PartMismatch { part: "initramfs", .. }), "{err}");
    std::fs::write(img.dir().join(ROOTFS_FILE), b"short").unwrap();
    std::fs::write(img.dir().join(INITRAMFS_FILE), b"initramfs").unwrap();
    let err = img.verify(None).unwrap_err();
    assert!(matches!(err, ImageError::SizeMismatch { part: "rootfs", .. }), "{err}");
    std::fs::remove_file(img.dir().join(KERNEL_FILE)).unwrap();
    assert!(matches!(img.verify(None).unwrap_err(), ImageError::PartMissing { part: "kernel", .. }));
}

#[test]
fn signatures_bind_the_manifest_bytes() {
    let (_t, store) = fixture();
    let img = store.open("img").unwrap();
    let k = key(1);
    assert!(matches!(img.verify(Some(&k.verifying_key())).unwrap_err(), ImageError::Unsigned { .. }));
    img.sign(&k).unwrap();
    img.verify(Some(&k.verifying_key())).unwrap();
    assert!(matches!(img.verify(Some(&key(2).verifying_key())).unwrap_err(), ImageError::WrongKey { .. }));
    // A consistent edit (same parts, other source) still breaks the signature.
    let path = img.dir().join(MANIFEST_FILE);
    let text = std::fs::read_to_string(&path).unwrap().replace("\"default\"", "\"dir:/evil\"");
    std::fs::write(&path, text).unwrap();
    img.verify(None).unwrap();
    let err = img.verify(Some(&k.verifying_key())).unwrap_err();
    assert!(matches!(err, ImageError::BadSignature { .. }), "{err}");
    assert!(err.to_string().contains("manifest.json"));
}

#[test]
fn corrupt_manifests_are_named() {
    let (_t, store) = fixture();
    let img = store.open("img").unwrap();
    std::fs::write(img.dir().join(MANIFEST_FILE), b"{not json").unwrap();
    let err = img.verify(None).unwrap_err();
    assert!(matches!(err, ImageError::BadManifest { .. }), "{err}");
    assert!(err.to_string().contains("manifest.json"), "{err}");
    let list = store.list().unwrap();
    assert_eq!(list.len(), 1);
    assert!(list[0].error.is_some());
}

#[test]
fn list_open_and_remove() {
    let (t, store) = fixture();
    std::fs::create_dir_all(t.path().join("images/.tmp-x-1")).unwrap();
    let list = store.list().unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].name, "img");
    assert_eq!(list[0].kernel, "vmlinuz");
    assert!(!list[0].signed);
    assert_eq!(list[0].size, 6 + 9 + 3 * 4096);
    assert!(matches!(store.open("nope"), Err(ImageError::NotFound { .. })));
    assert!(matches!(store.open("../x"), Err(ImageError::InvalidName { .. })));
    store.remove("img").unwrap();
    assert!(store.list().unwrap().is_empty());
}
