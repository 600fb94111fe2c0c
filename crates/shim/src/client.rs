//! The shim's side of the protocol: what the `clawkeep-shim` binary in a
//! jail and `clawkeep-guest` in shim mode in a VM both run. The command's
//! stdio is this process's stdio (passed as descriptors), its exit code is
//! this process's exit code, signals sent to this process are forwarded to
//! it, and a denied command prints the reason and exits 126.

use crate::{fdpass, frame, Reply, Request, EXIT_DENIED, EXIT_GATE_ERROR, JAIL_GATE_SOCKET, JAIL_MANIFEST, PROTOCOL_VERSION};
use std::collections::HashMap;
use std::ffi::OsStr;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::Path;

const FORWARDED: &[libc::c_int] = &[libc::SIGINT, libc::SIGTERM, libc::SIGHUP, libc::SIGQUIT, libc::SIGUSR1, libc::SIGUSR2, libc::SIGWINCH];

fn die(code: i32, msg: &str) -> ! {
    eprintln!("clawkeep: {msg}");
    std::process::exit(code)
}

fn manifest() -> HashMap<String, String> {
    std::fs::read_to_string(JAIL_MANIFEST)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_once('\t').map(|(p, c)| (p.to_string(), c.to_string())))
        .collect()
}

/// Which gated command this invocation is: the masked path that was
/// executed, or the name it was called by through the shims directory.
fn command_name(argv0: &str) -> Option<String> {
    let map = manifest();
    let exe = std::fs::read_link("/proc/self/exe").ok()?;
    if let Some(cmd) = map.get(exe.to_str()?) {
        return Some(cmd.clone());
    }
    let base = Path::new(argv0).file_name().and_then(OsStr::to_str)?.to_string();
    map.values().any(|c| *c == base).then_some(base)
}

/// What a gated command's request never carries: a credential-looking
/// variable (the same rule that keeps them out of the sandbox) or a loader
/// override.
fn is_secret(name: &str) -> bool {
    clawkeep_core::is_secret_name(name) || name.to_ascii_uppercase().starts_with("LD_")
}

/// Runs this process as the shim: asks the gate to run the command this
/// invocation stands for and exits with its exit code. `place` names the
/// sandbox in the error for a binary run under a name that is not gated
/// ("this jail", "this VM").
pub fn run(place: &str) -> ! {
    let mut argv = std::env::args();
    let argv0 = argv.next().unwrap_or_default();
    let args: Vec<String> = argv.collect();
    let Some(command) = command_name(&argv0) else {
        die(EXIT_DENIED, &format!("'{argv0}' is not a gated command of {place}"));
    };
    let cwd = std::env::current_dir().map(|p| p.display().to_string()).unwrap_or_else(|_| "/".into());
    let env = std::env::vars().filter(|(k, _)| !is_secret(k)).collect();
    // SAFETY: isatty only inspects descriptors.
    let tty = unsafe { libc::isatty(0) == 1 || libc::isatty(1) == 1 };
    let sock = UnixStream::connect(JAIL_GATE_SOCKET)
        .unwrap_or_else(|e| die(EXIT_GATE_ERROR, &format!("cannot reach the gate at {JAIL_GATE_SOCKET}: {e}")));
    let req = Request::Exec { version: PROTOCOL_VERSION, command: command.clone(), args, cwd, env, tty };
    if let Err(e) = fdpass::send_with_fds(sock.as_raw_fd(), &frame::encode(&req), &[0, 1, 2]) {
        die(EXIT_GATE_ERROR, &format!("sending the request to the gate failed: {e}"));
    }
    std::process::exit(relay(sock.as_raw_fd(), &command));
}

fn signal_fd() -> RawFd {
    // SAFETY: building and blocking a signal set, then a signalfd for it.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for s in FORWARDED {
            libc::sigaddset(&mut set, *s);
        }
        libc::sigprocmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        libc::signalfd(-1, &set, libc::SFD_CLOEXEC)
    }
}

/// Waits for the gate's answers, forwarding signals; returns the exit code.
fn relay(sock: RawFd, command: &str) -> i32 {
    let sigfd = signal_fd();
    let mut buf = Vec::new();
    let mut announced = false;
    loop {
        let mut fds =
            [libc::pollfd { fd: sock, events: libc::POLLIN, revents: 0 }, libc::pollfd { fd: sigfd, events: libc::POLLIN, revents: 0 }];
        // SAFETY: fds is a valid pollfd array.
        if unsafe { libc::poll(fds.as_mut_ptr(), 2, -1) } < 0 {
            continue;
        }
        if fds[1].revents != 0 {
            // SAFETY: signalfd_siginfo is plain data; read fills it.
            let mut info: libc::signalfd_siginfo = unsafe { std::mem::zeroed() };
            // SAFETY: info is valid for its size.
            let n = unsafe {
                libc::read(sigfd, (&mut info as *mut libc::signalfd_siginfo).cast(), std::mem::size_of::<libc::signalfd_siginfo>())
            };
            if n > 0 {
                let _ = fdpass::write_all(sock, &frame::encode(&Request::Signal { signal: info.ssi_signo as i32 }));
            }
        }
        if fds[0].revents == 0 {
            continue;
        }
        let mut chunk = [0u8; 4096];
        // SAFETY: chunk is valid for its length.
        let n = unsafe { libc::read(sock, chunk.as_mut_ptr().cast(), chunk.len()) };
        if n <= 0 {
            eprintln!("clawkeep: {command}: the gate closed the connection before the command finished");
            return EXIT_GATE_ERROR;
        }
        buf.extend_from_slice(&chunk[..n as usize]);
        loop {
            match frame::decode::<Reply>(&buf) {
                Err(frame::FrameError::Incomplete) => break,
                Err(e) => {
                    eprintln!("clawkeep: {command}: bad answer from the gate: {e}");
                    return EXIT_GATE_ERROR;
                }
                Ok((reply, used)) => {
                    buf.drain(..used);
                    match reply {
                        Reply::Pending { id, reason } => {
                            if !announced {
                                eprintln!("clawkeep: {command}: waiting for an operator to approve request #{id} ({reason})");
                                announced = true;
                            }
                        }
                        Reply::Started => {}
                        Reply::Exit { code } => return code,
                        Reply::Denied { reason } => {
                            eprintln!("clawkeep: {command}: denied: {reason}");
                            return EXIT_DENIED;
                        }
                        Reply::Error { message } => {
                            eprintln!("clawkeep: {command}: {message}");
                            return EXIT_GATE_ERROR;
                        }
                    }
                }
            }
        }
    }
}
