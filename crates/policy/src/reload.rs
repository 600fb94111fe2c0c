//! Hot reload. A [`PolicyHandle`] holds the policy in force; a reload swaps
//! it only after the new file parsed and checked completely, so a broken edit
//! never leaves the gate without a policy or with half of one.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime};

use crate::error::PolicyError;
use crate::policy::Policy;

/// The policy in force, shared by the gate's threads. Clones share it.
#[derive(Debug, Clone)]
pub struct PolicyHandle {
    inner: Arc<RwLock<Arc<Policy>>>,
}

/// What a watcher did after seeing the file change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReloadEvent {
    /// The new policy is in force.
    Reloaded {
        /// How many rules it has.
        rules: usize,
    },
    /// The new file was refused; the old policy stays in force.
    Rejected {
        /// Why (file:line: message). Never contains environment values.
        error: String,
    },
}

impl PolicyHandle {
    /// Puts `policy` in force.
    pub fn new(policy: Policy) -> Self {
        PolicyHandle { inner: Arc::new(RwLock::new(Arc::new(policy))) }
    }

    /// The policy in force now. Holding the returned `Arc` keeps deciding
    /// with it even if a reload happens meanwhile.
    pub fn current(&self) -> Arc<Policy> {
        // A panic while holding the lock cannot leave a half-written Arc, so a
        // poisoned lock still holds a whole policy.
        Arc::clone(&self.inner.read().unwrap_or_else(|e| e.into_inner()))
    }

    /// Puts `policy` in force (e.g. after an "approve always").
    pub fn replace(&self, policy: Policy) {
        swap(&self.inner, policy);
    }

    /// Loads `path` and puts it in force. On error the old policy stays.
    pub fn reload_from(&self, path: &Path) -> Result<(), PolicyError> {
        let policy = Policy::load(path)?;
        swap(&self.inner, policy);
        Ok(())
    }

    /// Polls `path` every `interval` and reloads when its modification time,
    /// length or content hash changes and then stays the same for one more
    /// poll (a file written in place is never put in force half-written,
    /// though a prefix of it may parse), reporting each attempt to
    /// `on_event`. A file that changed between its first load and the
    /// watch's start is reloaded at once. The thread ends within one
    /// interval after the last clone of this handle is dropped.
    pub fn watch(&self, path: PathBuf, interval: Duration, on_event: impl Fn(ReloadEvent) + Send + 'static) -> JoinHandle<()> {
        let weak: Weak<RwLock<Arc<Policy>>> = Arc::downgrade(&self.inner);
        let first = Snapshot::read(&path);
        // An unreadable file has no fingerprint; it is reported once, not every poll.
        let mut seen = first.as_ref().ok().map(|s| s.fingerprint);
        let mut first = first.ok();
        // A new fingerprint waits here for the next poll to confirm it.
        let mut pending = None;
        std::thread::spawn(move || loop {
            std::thread::sleep(interval);
            let Some(inner) = weak.upgrade() else { return };
            // The file as the watch found it, against the policy in force
            // (parsed here, one interval in, off a run's start-up).
            if let Some(snap) = first.take() {
                match Policy::parse(&snap.text, &path.display().to_string()) {
                    Ok(policy) if policy != **inner.read().unwrap_or_else(|e| e.into_inner()) => {
                        let rules = policy.rules().len();
                        swap(&inner, policy);
                        on_event(ReloadEvent::Reloaded { rules });
                    }
                    _ => {}
                }
            }
            let now = Snapshot::read(&path);
            let fingerprint = now.as_ref().ok().map(|s| s.fingerprint);
            if fingerprint == seen {
                pending = None;
                continue;
            }
            if pending != Some(fingerprint) {
                pending = Some(fingerprint);
                continue;
            }
            pending = None;
            seen = fingerprint;
            let result = match now {
                Ok(snap) => Policy::parse(&snap.text, &path.display().to_string()),
                Err(e) => Err(e),
            };
            match result {
                Ok(policy) => {
                    let rules = policy.rules().len();
                    swap(&inner, policy);
                    on_event(ReloadEvent::Reloaded { rules });
                }
                Err(e) => on_event(ReloadEvent::Rejected { error: e.to_string() }),
            }
        })
    }
}

fn swap(inner: &RwLock<Arc<Policy>>, policy: Policy) {
    *inner.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(policy);
}

/// The file's text and what identifies this version of it.
struct Snapshot {
    text: String,
    fingerprint: (Option<SystemTime>, u64, u64),
}

impl Snapshot {
    /// Reads text and metadata together, so the policy parsed is the one fingerprinted.
    fn read(path: &Path) -> Result<Snapshot, PolicyError> {
        let io = |source| PolicyError::Io { path: path.to_path_buf(), source };
        let meta = std::fs::metadata(path).map_err(io)?;
        let text = std::fs::read_to_string(path).map_err(io)?;
        let mut h = DefaultHasher::new();
        text.hash(&mut h);
        Ok(Snapshot { fingerprint: (meta.modified().ok(), meta.len(), h.finish()), text })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Action;

    #[test]
    fn handles_and_policies_cross_threads() {
        fn shareable<T: Send + Sync>() {}
        shareable::<PolicyHandle>();
        shareable::<Policy>();
    }

    #[test]
    fn replace_swaps_but_held_arcs_keep_the_old_policy() {
        let h = PolicyHandle::new(Policy::empty(Action::Deny, "a"));
        let held = h.current();
        h.clone().replace(Policy::empty(Action::Allow, "b"));
        assert_eq!(held.default_action(), Action::Deny);
        assert_eq!(h.current().default_action(), Action::Allow);
    }

    #[test]
    fn watcher_stops_when_the_handle_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.yaml");
        std::fs::write(&path, "default_action: deny\n").unwrap();
        let h = PolicyHandle::new(Policy::load(&path).unwrap());
        let thread = h.watch(path, Duration::from_millis(10), |_| {});
        drop(h);
        let start = std::time::Instant::now();
        while !thread.is_finished() {
            assert!(start.elapsed() < Duration::from_secs(2), "watcher kept running");
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}
