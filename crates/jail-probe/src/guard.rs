//! The jail guard: decides whether we are inside a clawkeep jail.
//!
//! All three signs must hold; any one alone could be faked or inherited by
//! accident, and a false "inside" on the host would let escape probes loose.

use std::fs;

/// What the jail's pid 1 calls itself (`/proc/1/comm`).
const JAIL_INIT_COMM: &str = "clawkeep-init";

/// True only when pid 1 is `clawkeep-init`, our user namespace is not the
/// initial (identity-mapped) one, and `CLAWKEEP_JAIL=1` is set. Any read
/// error counts as "outside".
pub fn inside_jail() -> bool {
    pid1_is_jail_init() && uid_map_is_not_identity() && jail_env_set()
}

fn pid1_is_jail_init() -> bool {
    fs::read_to_string("/proc/1/comm").is_ok_and(|comm| comm.trim() == JAIL_INIT_COMM)
}

/// The initial user namespace maps the whole range onto itself:
/// `0 0 4294967295` (user_namespaces(7)).
fn uid_map_is_not_identity() -> bool {
    fs::read_to_string("/proc/self/uid_map").is_ok_and(|map| !is_identity_or_empty(&map))
}

fn is_identity_or_empty(map: &str) -> bool {
    let fields: Vec<&str> = map.split_whitespace().collect();
    fields.is_empty() || fields == ["0", "0", "4294967295"]
}

fn jail_env_set() -> bool {
    std::env::var_os("CLAWKEEP_JAIL").is_some_and(|v| v == "1")
}

#[cfg(test)]
mod tests {
    use super::is_identity_or_empty;

    #[test]
    fn host_map_is_identity() {
        assert!(is_identity_or_empty("         0          0 4294967295\n"));
        assert!(is_identity_or_empty(""));
        assert!(!is_identity_or_empty("      1000       1000          1\n"));
        assert!(!is_identity_or_empty("0 100000 65536\n"));
    }
}
