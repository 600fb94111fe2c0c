//! `clawkeep image ...` end to end: build from a directory and a docker-save
//! tarball with the real Debian kernel, list, sign, verify, tamper, trust,
//! remove. Needs mkfs.ext4, veritysetup, busybox and the kernel that
//! .ci/fetch-kernel extracts; skips with the reason otherwise.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::Env;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Output;

/// True when an image can be built here; otherwise prints why not.
fn can_build(test: &str) -> bool {
    common::image_tools_available(test, &[("mkfs.ext4", "e2fsprogs"), ("veritysetup", "cryptsetup-bin"), ("busybox", "busybox-static")])
}

struct Images {
    env: Env,
    guest: PathBuf,
}

impl Images {
    fn new() -> Self {
        let env = Env::new();
        // A stand-in guest: the image crate only copies it.
        let guest = env.workspace.path().join("fake-guest");
        fs::write(&guest, "#!/bin/sh\necho guest\n").unwrap();
        Images { env, guest }
    }

    fn run(&self, args: &[&str]) -> Output {
        let mut c = self.env.cmd();
        c.env_remove("CLAWKEEP_IMAGE_PUBKEY").arg("image").args(args);
        c.output().unwrap()
    }

    fn build(&self, name: &str, extra: &[&str]) -> Output {
        let mut args = vec!["build", "--name", name, "--guest", self.guest.to_str().unwrap()];
        args.extend_from_slice(extra);
        self.run(&args)
    }

    fn images(&self) -> PathBuf {
        self.env.state.path().join("images")
    }

    fn leftovers(&self) -> Vec<String> {
        fs::read_dir(self.images()).map(|d| d.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect()).unwrap_or_default()
    }
}

fn ok(o: &Output) -> String {
    assert!(
        o.status.success(),
        "exit {:?}\nstdout: {}\nstderr: {}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn fails(o: &Output, code: i32) -> String {
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert_eq!(o.status.code(), Some(code), "stdout: {}\nstderr: {err}", String::from_utf8_lossy(&o.stdout));
    err
}

fn manifest(dir: &Path) -> serde_json::Value {
    serde_json::from_slice(&fs::read(dir.join("manifest.json")).unwrap()).unwrap()
}

#[test]
fn build_list_sign_verify_tamper_trust_rm() {
    if !can_build("build_list_sign_verify_tamper_trust_rm") {
        return;
    }
    let im = Images::new();
    let src = im.env.workspace.path().join("root");
    fs::create_dir_all(src.join("opt/app")).unwrap();
    fs::write(src.join("opt/app/hello"), "hello\n").unwrap();
    let out = im.build("t1", &["--from", src.to_str().unwrap()]);
    ok(&out);
    let progress = String::from_utf8_lossy(&out.stderr);
    // Not a terminal: one line per step, each with its bar.
    assert!(progress.contains("] 1/10 checking inputs") && progress.contains("[####################] 10/10 "), "progress: {progress}");
    assert_eq!(im.leftovers(), ["t1"]);
    let dir = im.images().join("t1");
    for f in ["vmlinuz", "vmlinux", "initramfs.cpio", "rootfs.img", "manifest.json"] {
        assert!(dir.join(f).is_file(), "{f}");
    }
    let m = manifest(&dir);
    assert_eq!(m["version"], 1);
    assert_eq!(m["rootfs"]["hash_offset"], m["rootfs"]["data_blocks"].as_u64().unwrap() * 4096);
    let cmdline = m["cmdline"].as_str().unwrap();
    for k in ["console=ttyS0", "rdinit=/init", "clawkeep.roothash=", "clawkeep.salt=", "clawkeep.datablocks=", "clawkeep.hashstart="] {
        assert!(cmdline.contains(k), "{k} in {cmdline}");
    }

    // The hash tree is what dm-verity will check in the guest.
    let r = &m["rootfs"];
    let v = std::process::Command::new("veritysetup")
        .args(["verify", "--no-superblock", "--format=1", "--hash=sha256", "--data-block-size=4096", "--hash-block-size=4096"])
        .arg(format!("--data-blocks={}", r["data_blocks"]))
        .arg(format!("--hash-offset={}", r["hash_offset"]))
        .arg(format!("--salt={}", r["salt"].as_str().unwrap()))
        .arg(dir.join("rootfs.img"))
        .arg(dir.join("rootfs.img"))
        .arg(r["root_hash"].as_str().unwrap())
        .output()
        .unwrap();
    assert!(v.status.success(), "veritysetup verify: {}", String::from_utf8_lossy(&v.stderr));

    // list --json shape.
    let list: serde_json::Value = serde_json::from_str(&ok(&im.run(&["list", "--json"]))).unwrap();
    let e = &list.as_array().unwrap()[0];
    assert_eq!(e["name"], "t1");
    assert!(e["kernel"].as_str().unwrap().starts_with("6."), "{e}");
    assert_eq!(e["root_hash"], r["root_hash"]);
    assert_eq!(e["signed"], false);
    assert!(e["size"].as_u64().unwrap() > 1 << 20);
    assert!(e["created"].as_str().unwrap().starts_with("20"));

    assert!(ok(&im.run(&["verify", "t1"])).starts_with("ok t1"));

    // Tampered parts and manifests are named, before any signing.
    let path = dir.join("manifest.json");
    let orig = fs::read_to_string(&path).unwrap();
    let isha = m["initramfs"]["sha256"].as_str().unwrap();
    fs::write(&path, orig.replace(isha, &"0".repeat(64))).unwrap();
    let err = fails(&im.run(&["verify", "t1"]), 1);
    assert!(err.contains("initramfs") && err.contains("expected sha256 0000"), "{err}");
    fs::write(&path, &orig).unwrap();
    let img = dir.join("rootfs.img");
    let bytes = fs::read(&img).unwrap();
    let mut bad = bytes.clone();
    bad[bytes.len() / 3] ^= 0x01;
    fs::write(&img, &bad).unwrap();
    let err = fails(&im.run(&["verify", "t1"]), 1);
    assert!(err.contains("rootfs (rootfs.img) does not match"), "{err}");
    fs::write(&img, &bytes).unwrap();

    // Sign; the key is created 0600 with its public half beside it.
    let out = ok(&im.run(&["sign", "t1"]));
    assert!(out.contains("signed image t1 with key"), "{out}");
    let key = im.env.state.path().join("image-key/signing.key");
    let public = im.env.state.path().join("image-key/signing.pub");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(fs::metadata(&key).unwrap().permissions().mode() & 0o777, 0o600);
    let sig: serde_json::Value = serde_json::from_slice(&fs::read(dir.join("manifest.sig")).unwrap()).unwrap();
    assert_eq!(sig["alg"], "Ed25519");
    assert_eq!(sig["key_id"].as_str().unwrap().len(), 16);
    assert!(ok(&im.run(&["verify", "t1", "--pubkey", public.to_str().unwrap()])).contains("signed by trusted key"));
    let list: serde_json::Value = serde_json::from_str(&ok(&im.run(&["list", "--json"]))).unwrap();
    assert_eq!(list[0]["signed"], true);

    // A signature by another key is refused.
    let other = Images::new();
    let other_dir = other.images().join("t1");
    fs::create_dir_all(&other_dir).unwrap();
    for f in ["vmlinuz", "vmlinux", "initramfs.cpio", "rootfs.img", "manifest.json"] {
        fs::copy(dir.join(f), other_dir.join(f)).unwrap();
    }
    ok(&other.run(&["sign", "t1"]));
    let other_pub = other.env.state.path().join("image-key/signing.pub");
    fs::copy(other_dir.join("manifest.sig"), dir.join("manifest.sig")).unwrap();
    let err = fails(&im.run(&["verify", "t1", "--pubkey", public.to_str().unwrap()]), 1);
    assert!(err.contains("not by the trusted key"), "{err}");
    ok(&im.run(&["sign", "t1"]));
    let err = fails(&im.run(&["verify", "t1", "--pubkey", other_pub.to_str().unwrap()]), 1);
    assert!(err.contains("not by the trusted key"), "{err}");

    // Once a key is trusted, verify needs a good signature by it.
    assert!(ok(&im.run(&["trust", public.to_str().unwrap()])).contains("trusted key"));
    assert!(ok(&im.run(&["verify", "t1"])).contains("signed by trusted key"));
    fs::write(&path, orig.replace("\"source\": \"dir:", "\"source\": \"dir:/evil")).unwrap();
    let err = fails(&im.run(&["verify", "t1"]), 1);
    assert!(err.contains("bad signature on manifest.json"), "{err}");
    fs::write(&path, &orig).unwrap();
    fs::remove_file(dir.join("manifest.sig")).unwrap();
    let err = fails(&im.run(&["verify", "t1"]), 1);
    assert!(err.contains("not signed"), "{err}");

    ok(&im.run(&["rm", "t1"]));
    assert_eq!(ok(&im.run(&["list", "--json"])).trim(), "[]");
    fails(&im.run(&["rm", "t1"]), 2);
}

#[test]
fn a_docker_save_tarball_becomes_the_root() {
    if !can_build("a_docker_save_tarball_becomes_the_root") {
        return;
    }
    let im = Images::new();
    let w = im.env.workspace.path();
    fs::create_dir_all(w.join("l1/etc")).unwrap();
    fs::write(w.join("l1/etc/os-release"), "ID=test\n").unwrap();
    fs::write(w.join("l1/etc/gone"), "x").unwrap();
    fs::create_dir_all(w.join("l2/etc")).unwrap();
    fs::write(w.join("l2/etc/.wh.gone"), "").unwrap();
    let tar = |args: &[&str]| assert!(std::process::Command::new("tar").current_dir(w).args(args).status().unwrap().success());
    tar(&["-cf", "layer1.tar", "-C", "l1", "."]);
    tar(&["-czf", "layer2.tar", "-C", "l2", "."]);
    fs::write(w.join("manifest.json"), r#"[{"Config":"c.json","RepoTags":["t:1"],"Layers":["layer1.tar","layer2.tar"]}]"#).unwrap();
    tar(&["-cf", "image.tar", "manifest.json", "layer1.tar", "layer2.tar"]);
    let out = im.build("oci", &["--from-oci", w.join("image.tar").to_str().unwrap()]);
    ok(&out);
    assert!(String::from_utf8_lossy(&out.stderr).contains("layer 2/2"));
    // The files are inside the ext4 image: debugfs reads it without mounting.
    let img = im.images().join("oci/rootfs.img");
    let ls = std::process::Command::new("debugfs").args(["-R", "ls -l /etc"]).arg(&img).output();
    if let Ok(ls) = ls {
        let text = String::from_utf8_lossy(&ls.stdout);
        assert!(text.contains("os-release") && !text.contains("gone"), "{text}");
    }
    assert!(manifest(&im.images().join("oci"))["source"].as_str().unwrap().starts_with("oci:"));
    ok(&im.run(&["verify", "oci"]));
}

#[test]
fn a_failed_build_leaves_nothing_behind() {
    let im = Images::new();
    let err = fails(&im.build("k", &["--kernel", "/nonexistent/vmlinuz"]), 2);
    assert!(err.contains("kernel not found at /nonexistent/vmlinuz"), "{err}");
    assert_eq!(err.lines().filter(|l| l.starts_with("clawkeep:")).count(), 1, "one error line: {err}");
    assert!(im.leftovers().is_empty(), "{:?}", im.leftovers());
    let err = fails(&im.build("../x", &[]), 2);
    assert!(err.contains("invalid image name"), "{err}");
    if !can_build("a_failed_build_leaves_nothing_behind (mkfs failure)") {
        return;
    }
    // Too small a filesystem fails in mkfs.ext4, after most of the work.
    let err = fails(&im.build("small", &["--size", "64K"]), 1);
    assert!(err.contains("mkfs.ext4"), "{err}");
    assert!(im.leftovers().is_empty(), "{:?}", im.leftovers());
}

#[test]
fn a_corrupt_image_dir_is_reported() {
    let im = Images::new();
    let dir = im.images().join("broken");
    fs::create_dir_all(&dir).unwrap();
    fs::write(dir.join("manifest.json"), "{ not json").unwrap();
    let err = fails(&im.run(&["verify", "broken"]), 1);
    assert!(err.contains("image 'broken' is corrupt") && err.contains("manifest.json"), "{err}");
    let list: serde_json::Value = serde_json::from_str(&ok(&im.run(&["list", "--json"]))).unwrap();
    assert_eq!(list[0]["name"], "broken");
    assert!(list[0]["error"].as_str().unwrap().contains("manifest.json"));
    assert!(ok(&im.run(&["list"])).contains("CORRUPT"));
    let err = fails(&im.run(&["verify", "nope"]), 2);
    assert!(err.contains("no image named 'nope'"), "{err}");
}
