//! Shim mode: this binary, run by any pid but 1, is a masked gated
//! command (see `masks.rs`). It runs the jail shim's client (the
//! `clawkeep-shim` crate) on the guest's /run/clawkeep/gate.sock, which pid
//! 1 relays to the host's gate: the request carries this process's stdin,
//! stdout and stderr, signals are forwarded, a denial prints the reason
//! and exits 126, the approved command's exit code is ours.

pub fn main() -> ! {
    clawkeep_shim::client::run("this VM (clawkeep-guest is the init of a clawkeep VM)")
}
