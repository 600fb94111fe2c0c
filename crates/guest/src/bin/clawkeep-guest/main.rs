//! clawkeep-guest: `/init` (pid 1) of a clawkeep microVM.
//!
//! Boot, in order: /dev, /proc, /sys; the kernel command line; kernel
//! modules; dm-verity over /dev/vda; the verified root read-only, /dev/vdb
//! at /var and /dev/vdc at /workspace; switch into the root; open the
//! `org.clawkeep.0` virtio-serial port (or, with `clawkeep.vsock=PORT`,
//! listen on that vsock port); say Ready; serve the channel.
//! Any boot step that fails prints one console line naming the step and
//! powers the VM off, so the host learns of it at once.
//!
//! Run as any other pid, it is a gated command's shim (`shim.rs`): pid 1
//! binds this binary over the gated commands (`masks.rs`, `gate.rs`).

mod cmdline;
mod dm;
mod exec;
mod gate;
mod masks;
mod modules;
mod mounts;
mod port;
mod power;
mod relay;
mod serve;
mod shim;
mod stdin;
mod stdio;
mod tty;

use std::time::Duration;

fn main() {
    if std::process::id() != 1 {
        shim::main();
    }
    let (transport, params) = boot();
    serve::serve(transport, params)
}

fn boot() -> (serve::Transport, cmdline::BootParams) {
    if let Err(e) = mounts::early() {
        power::fatal("mount", &e.to_string());
    }
    let line = std::fs::read_to_string("/proc/cmdline").unwrap_or_default();
    let params = cmdline::parse(&line).unwrap_or_else(|e| power::fatal("cmdline", &e.to_string()));
    if params.hang {
        // A test switch: a guest that never becomes ready.
        loop {
            std::thread::sleep(Duration::from_secs(3600));
        }
    }
    if let Err(e) = modules::load_all(&params) {
        power::fatal("modules", &e.to_string());
    }
    if !mounts::wait_for("/dev/vda", Duration::from_secs(10)) {
        power::fatal("root disk", "/dev/vda did not appear (is virtio_blk in the module list?)");
    }
    let root = dm::create_verity("clawkeep-root", "/dev/vda", &params).unwrap_or_else(|e| power::fatal("dm-verity", &e.to_string()));
    if let Err(e) = mounts::root(&root) {
        power::fatal("root", &e.to_string());
    }
    if let Err(e) = mounts::switch_root() {
        power::fatal("switch root", &e.to_string());
    }
    mounts::loopback_up();
    let transport = match params.vsock_port {
        Some(p) => port::listen_vsock(p).map(serve::Transport::Vsock),
        None => port::open(clawkeep_guest::proto::PORT_NAME, Duration::from_secs(10)).map(serve::Transport::Serial),
    };
    (transport.unwrap_or_else(|e| power::fatal("channel", &e.to_string())), params)
}
