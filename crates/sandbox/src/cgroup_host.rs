//! What cgroup hierarchies the host offers: parsed from mountinfo and
//! /proc/self/cgroup, each with the controllers it serves to us and where
//! our own cgroup is in it.

use super::Version;
use serde::{Deserialize, Serialize};
use std::fs;
use std::path::{Path, PathBuf};

/// One controller hierarchy we can write to: where our own cgroup is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hierarchy {
    pub version: Version,
    /// Controllers this hierarchy offers to us (for v2: in cgroup.controllers).
    pub controllers: Vec<String>,
    pub mount: PathBuf,
    /// Our own cgroup directory in this hierarchy.
    pub own_dir: PathBuf,
}

/// What the host offers.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct HostCgroups {
    pub hierarchies: Vec<Hierarchy>,
}

impl HostCgroups {
    pub fn detect() -> Self {
        let mountinfo = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let own = fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
        Self::parse(&mountinfo, &own, |p| fs::read_to_string(p).ok())
    }

    /// Parses mountinfo and /proc/self/cgroup; `read` reads v2's
    /// cgroup.controllers (a parameter so tests need no real cgroupfs).
    pub fn parse(mountinfo: &str, own: &str, read: impl Fn(&Path) -> Option<String>) -> Self {
        let mut hierarchies = Vec::new();
        for line in mountinfo.lines() {
            let Some((pre, post)) = line.split_once(" - ") else { continue };
            let pre: Vec<&str> = pre.split(' ').collect();
            let post: Vec<&str> = post.split(' ').collect();
            if pre.len() < 5 || post.len() < 3 {
                continue;
            }
            let (root, mount, fstype, superopts) = (pre[3], unescape(pre[4]), post[0], post[2]);
            let version = match fstype {
                "cgroup2" => Version::V2,
                "cgroup" => Version::V1,
                _ => continue,
            };
            let mut controllers: Vec<String> = match version {
                Version::V1 => superopts
                    .split(',')
                    .filter(|o| matches!(*o, "memory" | "pids" | "cpu" | "cpuacct" | "cpuset" | "freezer" | "blkio" | "devices"))
                    .map(str::to_owned)
                    .collect(),
                Version::V2 => Vec::new(),
            };
            let own_path = own.lines().find_map(|l| {
                let mut it = l.splitn(3, ':');
                let (_id, ctrls, path) = (it.next()?, it.next()?, it.next()?);
                let matches = match version {
                    Version::V2 => ctrls.is_empty(),
                    Version::V1 => !ctrls.is_empty() && controllers.iter().any(|c| ctrls.split(',').any(|x| x == c)),
                };
                matches.then(|| path.to_string())
            });
            let Some(own_path) = own_path else { continue };
            if controllers.is_empty() && version == Version::V1 {
                continue;
            }
            let rel = own_path.strip_prefix(root).unwrap_or(&own_path).trim_start_matches('/');
            let own_dir = PathBuf::from(&mount).join(rel);
            if version == Version::V2 {
                controllers = read(&own_dir.join("cgroup.controllers")).unwrap_or_default().split_whitespace().map(str::to_owned).collect();
            }
            hierarchies.push(Hierarchy { version, controllers, mount: PathBuf::from(mount), own_dir });
        }
        Self { hierarchies }
    }

    /// The hierarchy that serves `controller`, v2 first.
    pub fn for_controller(&self, controller: &str) -> Option<&Hierarchy> {
        let has = |h: &&Hierarchy| h.controllers.iter().any(|c| c == controller);
        self.hierarchies
            .iter()
            .filter(|h| h.version == Version::V2)
            .find(has)
            .or_else(|| self.hierarchies.iter().filter(|h| h.version == Version::V1).find(has))
    }
}

fn unescape(s: &str) -> String {
    s.replace("\\040", " ").replace("\\011", "\t").replace("\\012", "\n").replace("\\134", "\\")
}
