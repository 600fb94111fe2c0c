//! The agent's last steps before exec: terminal, signals, privileges,
//! landlock, seccomp, descriptors. The order matters and is the kernel's:
//! capabilities are dropped while CAP_SETPCAP is still held, no_new_privs
//! precedes the unprivileged seccomp install, and seccomp comes last so the
//! set-up itself is not filtered.

use crate::error::{SetupFailure, Step};
use crate::protocol::{ChildMsg, HelperConfig};
use crate::{caps, landlock, seccomp};
use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};

/// Never returns: execs the agent's command or reports why it could not.
pub fn agent_main(cfg: &HelperConfig, status_fd: i32, can_setgroups: bool, tty: Option<OwnedFd>, gate: OwnedFd) -> ! {
    let code = match prepare(cfg, status_fd, can_setgroups, tty, gate) {
        Ok(never) => match never {},
        Err(Failure::Setup(failure)) => {
            ChildMsg::Setup { failure }.send(status_fd);
            1
        }
        Err(Failure::Exec { path, err }) => {
            let errno = err.raw_os_error().unwrap_or(0);
            ChildMsg::ExecFailed { path, errno, message: err.to_string() }.send(status_fd);
            if errno == libc::ENOENT {
                127
            } else {
                126
            }
        }
    };
    // SAFETY: _exit in a forked child.
    unsafe { libc::_exit(code) }
}

enum Failure {
    Setup(SetupFailure),
    Exec { path: String, err: io::Error },
}

impl From<SetupFailure> for Failure {
    fn from(f: SetupFailure) -> Self {
        Failure::Setup(f)
    }
}

enum Never {}

fn prepare(cfg: &HelperConfig, status_fd: i32, can_setgroups: bool, tty: Option<OwnedFd>, gate: OwnedFd) -> Result<Never, Failure> {
    let spec = &cfg.spec;
    let cstr = |s: &str| CString::new(s).map_err(|_| SetupFailure::msg(Step::Exec, s, "contains a NUL byte"));
    let argv: Vec<CString> = spec.argv.iter().map(|a| cstr(a)).collect::<Result<_, _>>()?;
    let envp: Vec<CString> = spec.env.iter().map(|(k, v)| cstr(&format!("{k}={v}"))).collect::<Result<_, _>>()?;
    let path_var = spec.env.iter().find(|(k, _)| k == "PATH").map_or(clawkeep_core::env::AGENT_PATH, |(_, v)| v.as_str());
    let candidates = candidates(&spec.argv[0], path_var).into_iter().map(|c| cstr(&c)).collect::<Result<Vec<_>, _>>()?;

    // SAFETY: the remaining calls are plain syscalls on our own process.
    unsafe {
        match &tty {
            // The jail's own pty becomes the controlling terminal of a new
            // session and replaces every stdio descriptor that was a terminal.
            Some(slave) => {
                let s = slave.as_raw_fd();
                if libc::setsid() < 0 || libc::ioctl(s, libc::TIOCSCTTY, 0) < 0 {
                    return Err(SetupFailure::new(Step::Terminal, "TIOCSCTTY", &io::Error::last_os_error()).into());
                }
                for fd in 0..3 {
                    if libc::isatty(fd) == 1 && libc::dup2(s, fd) < 0 {
                        return Err(SetupFailure::new(Step::Terminal, "dup2", &io::Error::last_os_error()).into());
                    }
                }
            }
            // Its own process group, so a terminal's job-control signals reach
            // it once, through the launcher's forwarding.
            None => {
                libc::setpgid(0, 0);
            }
        }
        drop(tty);
        for sig in 1..libc::SIGRTMAX() {
            if sig != libc::SIGKILL && sig != libc::SIGSTOP {
                libc::signal(sig, libc::SIG_DFL);
            }
        }
        let empty = crate::init::signal_set(std::iter::empty());
        libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut());
    }
    std::env::set_current_dir("/workspace").map_err(|e| SetupFailure::new(Step::Chdir, "/workspace", &e))?;
    caps::drop_to_agent(can_setgroups)?;
    if cfg.landlock {
        let status = landlock::apply().map_err(|e| SetupFailure::msg(Step::Landlock, "ruleset", e))?;
        ChildMsg::Landlock { status }.send(status_fd);
    }
    // No descriptor but stdio crosses exec, whatever the helper inherited.
    // SAFETY: marks descriptors close-on-exec; no memory is touched.
    unsafe { libc::close_range(3, u32::MAX, libc::CLOSE_RANGE_CLOEXEC as libc::c_int) };

    // The gate opens when the launcher's start event is durable, and brings
    // the compiled seccomp filters; end of file means the run was called off.
    let Some(filters) = read_gate(gate.as_raw_fd()) else {
        // SAFETY: _exit in a forked child.
        unsafe { libc::_exit(1) }
    };
    drop(gate);
    seccomp::install_encoded(&filters).map_err(|e| SetupFailure::msg(Step::Seccomp, "filter", e))?;
    let mut argv_p: Vec<*const libc::c_char> = argv.iter().map(|a| a.as_ptr()).collect();
    argv_p.push(std::ptr::null());
    let mut envp_p: Vec<*const libc::c_char> = envp.iter().map(|a| a.as_ptr()).collect();
    envp_p.push(std::ptr::null());
    let mut last = io::Error::from_raw_os_error(libc::ENOENT);
    let mut tried = spec.argv[0].clone();
    for cand in &candidates {
        // SAFETY: argv and envp are NUL-terminated arrays of valid C strings that outlive the call.
        unsafe { libc::execve(cand.as_ptr(), argv_p.as_ptr(), envp_p.as_ptr()) };
        let e = io::Error::last_os_error();
        // execvp(3) semantics: keep looking past ENOENT/ENOTDIR, remember EACCES.
        match e.raw_os_error() {
            Some(libc::ENOENT) | Some(libc::ENOTDIR) => {}
            Some(libc::EACCES) => {
                last = e;
                tried = cand.to_string_lossy().into_owned();
            }
            _ => return Err(Failure::Exec { path: cand.to_string_lossy().into_owned(), err: e }),
        }
    }
    Err(Failure::Exec { path: tried, err: last })
}

fn read_gate(fd: i32) -> Option<Vec<u8>> {
    let mut len = [0u8; 4];
    crate::sys::read_exact(fd, &mut len).ok()?;
    let mut body = vec![0u8; u32::from_le_bytes(len) as usize];
    crate::sys::read_exact(fd, &mut body).ok()?;
    Some(body)
}

/// Where to look for `cmd`: itself when it has a slash, else each PATH entry.
fn candidates(cmd: &str, path: &str) -> Vec<String> {
    if cmd.contains('/') {
        return vec![cmd.to_string()];
    }
    path.split(':').filter(|d| !d.is_empty()).map(|d| format!("{}/{cmd}", d.trim_end_matches('/'))).collect()
}

#[cfg(test)]
mod tests {
    use super::candidates;

    #[test]
    fn path_search() {
        assert_eq!(candidates("/bin/true", "/usr/bin"), ["/bin/true"]);
        assert_eq!(candidates("ls", "/usr/bin:/bin/"), ["/usr/bin/ls", "/bin/ls"]);
        assert_eq!(candidates("./x", "/usr/bin"), ["./x"]);
    }
}
