//! clawkeep-guest: the agent that runs as `/init` (pid 1) inside a clawkeep
//! microVM, and the channel protocol the host speaks to it.
//!
//! The library holds only [`proto`] (std + serde), so the host side can
//! depend on it without pulling in anything guest-specific. The binary
//! (`src/bin/clawkeep-guest/`) holds the boot steps, one module per
//! mechanism: `cmdline`, `mounts`, `modules`, `dm` (dm-verity via the
//! device-mapper ioctls), `port` (the virtio-serial channel), `exec`,
//! `relay` and `power`.

pub mod proto;
