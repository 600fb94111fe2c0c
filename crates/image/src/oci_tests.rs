use super::*;
use std::io::Write;

/// A tar (optionally gzip) of (path, Some(contents)) files and (path, None) dirs.
fn layer(entries: &[(&str, Option<&str>)], gzip: bool) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (path, data) in entries {
        let mut h = tar::Header::new_gnu();
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        match data {
            Some(d) => {
                h.set_entry_type(tar::EntryType::Regular);
                h.set_size(d.len() as u64);
                h.set_mode(0o644);
                b.append_data(&mut h, path, d.as_bytes()).unwrap();
            }
            None => {
                h.set_entry_type(tar::EntryType::Directory);
                h.set_size(0);
                h.set_mode(0o755);
                b.append_data(&mut h, path, std::io::empty()).unwrap();
            }
        }
    }
    let bytes = b.into_inner().unwrap();
    if !gzip {
        return bytes;
    }
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&bytes).unwrap();
    gz.finish().unwrap()
}

fn outer(files: &[(&str, Vec<u8>)]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (path, data) in files {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        b.append_data(&mut h, path, data.as_slice()).unwrap();
    }
    b.into_inner().unwrap()
}

fn base_and_top() -> (Vec<u8>, Vec<u8>) {
    let l1 = layer(&[("a", None), ("a/x", Some("x")), ("a/y", Some("y")), ("d", None), ("d/old", Some("old")), ("f", Some("file"))], false);
    let l2 =
        layer(&[("a/.wh.x", Some("")), ("d/.wh..wh..opq", Some("")), ("d/new", Some("new")), ("f", None), ("f/inner", Some("i"))], true);
    (l1, l2)
}

fn check_result(root: &Path) {
    assert!(!root.join("a/x").exists(), "whiteout removes a/x");
    assert_eq!(fs::read_to_string(root.join("a/y")).unwrap(), "y");
    assert!(!root.join("d/old").exists(), "opaque dir hides the lower layer");
    assert_eq!(fs::read_to_string(root.join("d/new")).unwrap(), "new");
    assert_eq!(fs::read_to_string(root.join("f/inner")).unwrap(), "i", "a directory replaces a file");
    assert!(!root.join("a/.wh.x").exists() && !root.join("d/.wh..wh..opq").exists(), "whiteouts are not copied");
}

#[test]
fn docker_save_layers_apply_in_order_with_whiteouts() {
    let t = tempfile::tempdir().unwrap();
    let (l1, l2) = base_and_top();
    let manifest = br#"[{"Config":"c.json","RepoTags":["x:latest"],"Layers":["l1/layer.tar","l2/layer.tar"]}]"#.to_vec();
    let tarball = t.path().join("img.tar");
    fs::write(&tarball, outer(&[("manifest.json", manifest), ("l1/layer.tar", l1), ("l2/layer.tar", l2)])).unwrap();
    let root = t.path().join("root");
    fs::create_dir(&root).unwrap();
    let mut seen = Vec::new();
    unpack(&tarball, &t.path().join("work"), &root, |i, n, _| seen.push((i, n))).unwrap();
    assert_eq!(seen, [(1, 2), (2, 2)]);
    check_result(&root);
}

#[test]
fn oci_layout_is_read_through_its_index_and_digests_are_checked() {
    let t = tempfile::tempdir().unwrap();
    let (l1, l2) = base_and_top();
    let digest = |b: &[u8]| hex::encode(Sha256::digest(b));
    let (d1, d2) = (digest(&l1), digest(&l2));
    let manifest = format!(r#"{{"schemaVersion":2,"layers":[{{"digest":"sha256:{d1}"}},{{"digest":"sha256:{d2}"}}]}}"#).into_bytes();
    let dm = digest(&manifest);
    let index = format!(r#"{{"schemaVersion":2,"manifests":[{{"digest":"sha256:{dm}"}}]}}"#).into_bytes();
    let blob = |d: &str| format!("blobs/sha256/{d}");
    let files = [("index.json", index.clone()), (&*blob(&dm), manifest.clone()), (&*blob(&d1), l1.clone()), (&*blob(&d2), l2.clone())]
        .map(|(p, d)| (p.to_string(), d));
    let as_refs: Vec<(&str, Vec<u8>)> = files.iter().map(|(p, d)| (p.as_str(), d.clone())).collect();
    let tarball = t.path().join("oci.tar");
    fs::write(&tarball, outer(&as_refs)).unwrap();
    let root = t.path().join("root");
    fs::create_dir(&root).unwrap();
    unpack(&tarball, &t.path().join("work"), &root, |_, _, _| {}).unwrap();
    check_result(&root);

    // A blob that does not match its digest is refused.
    let mut tampered = as_refs.clone();
    tampered[2].1 = layer(&[("evil", Some("e"))], false);
    fs::write(&tarball, outer(&tampered)).unwrap();
    let root2 = t.path().join("root2");
    fs::create_dir(&root2).unwrap();
    let err = unpack(&tarball, &t.path().join("work2"), &root2, |_, _, _| {}).unwrap_err();
    assert!(err.to_string().contains("does not match its digest"), "{err}");
}

#[test]
fn entries_never_escape_the_root() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("root");
    fs::create_dir(&root).unwrap();
    // A symlink to outside, then a file and a whiteout through it.
    std::os::unix::fs::symlink(t.path(), root.join("link")).unwrap();
    fs::write(t.path().join("victim"), "keep").unwrap();
    let l = t.path().join("l.tar");
    fs::write(&l, layer(&[("link/.wh.victim", Some(""))], false)).unwrap();
    apply_layer(&l, &root).unwrap();
    assert_eq!(fs::read_to_string(t.path().join("victim")).unwrap(), "keep");
    fs::write(&l, layer(&[("link/planted", Some("x"))], false)).unwrap();
    assert!(apply_layer(&l, &root).is_err());
    assert!(!t.path().join("planted").exists());
    // A raw `..` name (tar::Builder refuses to write one, so patch the header).
    let mut bytes = layer(&[("xxevil", Some("x"))], false);
    bytes[..6].copy_from_slice(b"../evi");
    let mut h = tar::Header::from_byte_slice(&bytes[..512]).clone();
    h.set_cksum();
    bytes[..512].copy_from_slice(h.as_bytes());
    fs::write(&l, &bytes).unwrap();
    assert!(apply_layer(&l, &root).is_err());
    assert!(!t.path().join("evil").exists() && !t.path().join("evil").exists());
}

#[test]
fn a_whiteout_of_dot_dot_is_refused_and_removes_nothing() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("root");
    fs::create_dir_all(root.join("sub")).unwrap();
    fs::write(root.join("sub/keep"), "k").unwrap();
    let l = t.path().join("l.tar");
    for name in ["sub/.wh...", "sub/.wh..", ".wh..."] {
        fs::write(&l, layer(&[(name, Some(""))], false)).unwrap();
        let err = apply_layer(&l, &root).unwrap_err();
        assert!(err.contains("names no file"), "{name}: {err}");
        assert_eq!(fs::read_to_string(root.join("sub/keep")).unwrap(), "k");
    }
}

#[test]
fn a_docker_layer_path_through_a_symlink_is_refused() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("unpacked");
    fs::create_dir(&dir).unwrap();
    fs::write(t.path().join("host-secret.tar"), layer(&[("stolen", Some("secret"))], false)).unwrap();
    std::os::unix::fs::symlink(t.path().join("host-secret.tar"), dir.join("l")).unwrap();
    fs::write(dir.join("manifest.json"), r#"[{"Layers": ["l"]}]"#).unwrap();
    let err = layers(&dir).unwrap_err();
    assert!(err.contains("symlink"), "{err}");
}
