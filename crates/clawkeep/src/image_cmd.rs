//! `clawkeep image ...`: build, sign, verify, list, rm, trust.

use crate::cli::ImageCommand;
use crate::Failure;
use clawkeep_image::progress::human;
use clawkeep_image::{build, sign, trust, BuildOptions, ImageError, ImageStore, Progress, RootSource};
use std::path::{Path, PathBuf};

pub fn run(state_dir: Option<PathBuf>, cmd: ImageCommand) -> Result<u8, Failure> {
    let state = crate::audit_cmd::state_root(state_dir)?;
    match cmd {
        ImageCommand::Build { name, from, from_oci, kernel, modules, guest, size } => {
            let source = match (from, from_oci) {
                (Some(d), _) => RootSource::Dir(d),
                (None, Some(t)) => RootSource::Oci(t),
                (None, None) => RootSource::Default,
            };
            let opts = BuildOptions { name, source, kernel, modules, guest, busybox: None, size };
            build_image(&writable(&state)?, &opts)
        }
        ImageCommand::Sign { name, key } => sign_image(&state, &name, key.as_deref()),
        ImageCommand::Verify { name, pubkey } => verify(&state, &name, pubkey.as_deref()),
        ImageCommand::List { json } => list(&state, json),
        ImageCommand::Rm { name } => {
            ImageStore::new(&state).remove(&name).map_err(failure)?;
            println!("removed image {name}");
            Ok(0)
        }
        ImageCommand::Trust { pubkey } => {
            let key = trust::trust(&writable(&state)?, &pubkey).map_err(failure)?;
            println!(
                "trusted key {} ({}); images must now be signed by it to verify and boot",
                sign::key_id(&key),
                trust::trusted_path(&state).display()
            );
            Ok(0)
        }
    }
}

/// An image error as a one-line failure: bad input exits 2, the rest 1.
fn failure(e: ImageError) -> Failure {
    if e.is_usage() {
        Failure::usage(e.to_string())
    } else {
        Failure::runtime(e.to_string())
    }
}

/// The state directory, created 0700 (commands that write need it).
fn writable(state: &Path) -> Result<PathBuf, Failure> {
    clawkeep_core::state_dir(state).map_err(|e| Failure::usage(e.to_string()))
}

fn build_image(state: &Path, opts: &BuildOptions) -> Result<u8, Failure> {
    let store = ImageStore::new(state);
    let mut progress = Progress::stderr("image build", clawkeep_image::build::STEPS);
    let m = build(&store, opts, &mut progress).map_err(failure)?;
    progress.finish();
    let total = m.kernel.size + m.vmlinux.as_ref().map_or(0, |v| v.size) + m.initramfs.size + m.rootfs.size;
    println!("built image {} in {} ({}, root hash {})", m.name, store.root().join(&m.name).display(), human(total), m.rootfs.root_hash);
    println!("sign it with 'clawkeep image sign {}'", m.name);
    Ok(0)
}

fn sign_image(state: &Path, name: &str, key: Option<&Path>) -> Result<u8, Failure> {
    let store = ImageStore::new(state);
    let image = store.open(name).map_err(failure)?;
    let (path, create) = match key {
        Some(k) => (k.to_path_buf(), false),
        None => (sign::default_key_path(&writable(state)?), true),
    };
    let (key, created) = sign::load_or_create_signing_key(&path, create).map_err(failure)?;
    if created {
        let public = path.with_file_name(sign::PUBLIC_KEY_FILE);
        eprintln!("clawkeep: created signing key {} (public key {})", path.display(), public.display());
        eprintln!("clawkeep: on each host that boots this image run 'clawkeep image trust {}'", public.display());
    }
    let sig = image.sign(&key).map_err(failure)?;
    println!("signed image {name} with key {}", sig.key_id);
    Ok(0)
}

fn verify(state: &Path, name: &str, pubkey: Option<&Path>) -> Result<u8, Failure> {
    let store = ImageStore::new(state);
    let image = store.open(name).map_err(failure)?;
    let trusted = match pubkey {
        Some(p) => Some(sign::read_public_key(p).map_err(failure)?),
        None => trust::configured_pubkey(state).map_err(failure)?,
    };
    // A mismatch is the answer to the question, not a usage error: exit 1.
    let v = image.verify(trusted.as_ref()).map_err(|e| Failure::runtime(e.to_string()))?;
    let parts = if v.vmlinux.is_some() { "kernel, vmlinux, initramfs and rootfs" } else { "kernel, initramfs and rootfs" };
    let signature = match &trusted {
        Some(k) => format!("signed by trusted key {}", sign::key_id(k)),
        None => "signature not checked (no trusted key: pass --pubkey FILE or run 'clawkeep image trust FILE')".to_string(),
    };
    println!("ok {name}: {parts} match manifest.json; {signature}");
    Ok(0)
}

fn list(state: &Path, json: bool) -> Result<u8, Failure> {
    let images = ImageStore::new(state).list().map_err(failure)?;
    if json {
        println!("{}", serde_json::to_string(&images).map_err(|e| Failure::runtime(e.to_string()))?);
        return Ok(0);
    }
    if images.is_empty() {
        println!("no images; build one with 'clawkeep image build --name NAME'");
        return Ok(0);
    }
    println!("{:<20} {:<24} {:<18} {:<7} {:>10}  ROOT HASH", "NAME", "CREATED", "KERNEL", "SIGNED", "SIZE");
    for i in images {
        if let Some(e) = &i.error {
            println!("{:<20} CORRUPT: {e}", i.name);
            continue;
        }
        let signed = if i.signed { "yes" } else { "no" };
        let created: String = i.created.chars().take(19).collect();
        println!(
            "{:<20} {:<24} {:<18} {:<7} {:>10}  {}",
            i.name,
            created,
            i.kernel,
            signed,
            human(i.size),
            &i.root_hash[..16.min(i.root_hash.len())]
        );
    }
    Ok(0)
}
