use super::{agents_root, make_base, runtime_base, RUNTIME_PREFIX};
use std::os::unix::fs::PermissionsExt;

fn state() -> tempfile::TempDir {
    tempfile::tempdir().expect("tempdir")
}

#[test]
fn agents_links_once_into_a_private_runtime_dir_when_there_is_one() {
    let st = state();
    let root = agents_root(st.path()).expect("root");
    let link = st.path().join("agents");
    match runtime_base() {
        Some(base) => {
            assert_eq!(std::fs::read_link(&link).expect("a link"), root);
            assert_eq!(root.parent(), Some(base.as_path()));
            assert!(root.file_name().unwrap().to_string_lossy().starts_with(RUNTIME_PREFIX), "{}", root.display());
            let meta = std::fs::symlink_metadata(&base).expect("base");
            assert!(meta.is_dir() && meta.permissions().mode() & 0o077 == 0, "{meta:?}");
            // The same on the next run, also once the dir itself is gone
            // (the last run of the state dir removes it).
            std::fs::create_dir(&root).expect("made by a run");
            std::fs::remove_dir(&root).expect("removed by its end");
            assert_eq!(agents_root(st.path()).expect("again"), root);
        }
        None => {
            println!("no tmpfs runtime dir on this host: agents stays a plain dir");
            assert_eq!(root, link);
        }
    }
}

#[test]
fn a_plain_dir_in_use_stays_and_an_empty_one_gives_way() {
    let st = state();
    let link = st.path().join("agents");
    std::fs::create_dir_all(link.join("live")).unwrap();
    assert_eq!(agents_root(st.path()).unwrap(), link, "a run still uses it");
    assert!(std::fs::symlink_metadata(&link).unwrap().is_dir());
    std::fs::remove_dir(link.join("live")).unwrap();
    let root = agents_root(st.path()).unwrap();
    if runtime_base().is_some() {
        assert!(std::fs::symlink_metadata(&link).unwrap().file_type().is_symlink());
        assert_ne!(root, link);
    } else {
        assert_eq!(root, link);
    }
}

#[test]
fn a_base_that_is_not_ours_and_private_is_refused() {
    let dir = state();
    let loose = dir.path().join("loose");
    std::fs::create_dir(&loose).unwrap();
    std::fs::set_permissions(&loose, std::fs::Permissions::from_mode(0o755)).unwrap();
    let e = make_base(&loose).unwrap_err();
    assert!(e.message.contains("not a private dir") && e.message.contains("mode 755"), "{}", e.message);
    let link = dir.path().join("link");
    let private = dir.path().join("private");
    std::fs::create_dir(&private).unwrap();
    std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o700)).unwrap();
    std::os::unix::fs::symlink(&private, &link).unwrap();
    assert!(make_base(&link).is_err(), "a link is refused, even to a private dir");
    make_base(&private).expect("a private dir of ours");
    let fresh = dir.path().join("fresh");
    make_base(&fresh).expect("made");
    assert_eq!(std::fs::metadata(&fresh).unwrap().permissions().mode() & 0o7777, 0o700);
}

#[test]
fn a_link_elsewhere_is_refused() {
    let st = state();
    std::os::unix::fs::symlink("/etc", st.path().join("agents")).unwrap();
    let e = agents_root(st.path()).unwrap_err();
    assert!(e.message.contains("not a runtime dir of clawkeep"), "{}", e.message);
}

#[test]
fn a_link_into_a_base_that_is_gone_or_not_private_is_pointed_elsewhere() {
    let st = state();
    let link = st.path().join("agents");
    let loose = st.path().join("loose-base");
    std::fs::create_dir(&loose).unwrap();
    std::fs::set_permissions(&loose, std::fs::Permissions::from_mode(0o755)).unwrap();
    // A logout removed $XDG_RUNTIME_DIR; another user's or a loose base.
    for stale in [std::path::PathBuf::from("/nonexistent-clawkeep-test/base"), loose.clone()] {
        let old = stale.join(format!("{RUNTIME_PREFIX}0123"));
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(&old, &link).unwrap();
        let root = agents_root(st.path()).expect("pointed elsewhere");
        assert_ne!(root, old, "a base that is gone or loose is not used");
        match runtime_base() {
            Some(base) => {
                assert_eq!(std::fs::read_link(&link).unwrap(), root);
                assert_eq!(root.parent(), Some(base.as_path()));
            }
            None => assert!(std::fs::symlink_metadata(&link).unwrap().is_dir(), "a plain dir instead"),
        }
    }
    assert!(!loose.join(format!("{RUNTIME_PREFIX}0123")).exists(), "nothing was made in the loose base");
}

/// Runs of a new version starting together on a state dir whose plain
/// `agents` an older one left: each gets a root it can make its dir in.
#[test]
fn first_runs_racing_on_an_old_plain_dir_all_get_a_usable_root() {
    for round in 0..10 {
        let st = state();
        std::fs::create_dir(st.path().join("agents")).unwrap();
        let start = std::sync::Arc::new(std::sync::Barrier::new(4));
        let runs: Vec<_> = (0..4)
            .map(|i| {
                let (dir, start) = (st.path().to_path_buf(), start.clone());
                std::thread::spawn(move || {
                    start.wait();
                    let root = agents_root(&dir).map_err(|f| f.message)?;
                    std::fs::DirBuilder::new().recursive(true).create(root.join(format!("run-{i}"))).map_err(|e| e.to_string())?;
                    Ok::<_, String>(root)
                })
            })
            .collect();
        let made: Vec<Result<std::path::PathBuf, String>> = runs.into_iter().map(|r| r.join().unwrap()).collect();
        let link = std::fs::read_link(st.path().join("agents")).ok();
        // The runtime dir outlives the state dir's temp dir: removed here.
        if let Some(t) = &link {
            let _ = std::fs::remove_dir_all(t);
        }
        let roots: Vec<std::path::PathBuf> = made.into_iter().map(|m| m.unwrap_or_else(|e| panic!("round {round}: {e}"))).collect();
        // One root for all, the one the link names (or the plain dir).
        let named = link.unwrap_or_else(|| st.path().join("agents"));
        assert!(roots.iter().all(|r| *r == named), "round {round}: {roots:?} vs the link's {named:?}");
    }
}
