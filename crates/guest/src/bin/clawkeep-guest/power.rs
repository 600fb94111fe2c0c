//! The guest's last steps: a fatal boot error is one console line and a
//! power-off, so the host sees it in seconds, not at its timeout.

use std::io::Write;

/// Syncs and powers the VM off; never returns.
pub fn power_off() -> ! {
    // SAFETY: sync has no preconditions.
    unsafe { libc::sync() };
    // Without ACPI (Firecracker) a power-off only halts the CPU and the VMM
    // keeps running; a reset ends both VMMs (`reboot=k`, or `reboot=t`
    // under QEMU's -no-reboot).
    if std::path::Path::new("/sys/firmware/acpi").exists() {
        // SAFETY: reboot with a valid command; as pid 1 we hold CAP_SYS_BOOT.
        unsafe { libc::reboot(libc::RB_POWER_OFF) };
    }
    // SAFETY: as above.
    unsafe { libc::reboot(libc::RB_AUTOBOOT) };
    loop {
        std::thread::sleep(std::time::Duration::from_secs(3600));
    }
}

/// Prints one line to the console and powers off.
pub fn fatal(step: &str, message: &str) -> ! {
    let line = format!("clawkeep-guest: fatal: {step}: {message}\n");
    match std::fs::OpenOptions::new().write(true).open("/dev/console") {
        Ok(mut c) => {
            let _ = c.write_all(line.as_bytes());
        }
        Err(_) => eprint!("{line}"),
    }
    power_off()
}
