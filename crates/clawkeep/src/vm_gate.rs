//! The gate's executor for a VM agent: an approved command runs inside
//! the guest, for the shim that asked, with that shim's stdio.
//!
//! The gate only sees placeholder descriptors (the shim's real stdio never
//! leaves the guest); the placeholder's inode names the guest relay stream
//! (`clawkeep_sandbox::vm::gate_relay`), and the job goes back on it as
//! GatedExec. The guest holds it until [`RunningJob::release`] (the gate's
//! decision record is on disk); `--timeout`-style policy timeouts are
//! enforced here: SIGKILL, then 124.

use clawkeep_gate::{Executor, Job, Outcome, RunningJob};
use clawkeep_sandbox::vm::channel::{Channel, ExecStream};
use clawkeep_sandbox::vm::guest_proto::{GateSetup, GatedJob, Message};
use clawkeep_sandbox::vm::Vm;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

/// What the guest gates and who runs the approved commands.
pub struct Gating {
    pub commands: Vec<String>,
    pub executor: VmExecutor,
}

impl Gating {
    /// Hands the channel to the executor and has the guest mask the gated
    /// commands; the command's Exec is sent only after the guest said so.
    pub fn setup(&self, vm: &Vm) -> Result<(), String> {
        let _ = self.executor.channel.set(vm.channel.clone());
        let setup = GateSetup { commands: self.commands.clone() };
        vm.channel.send(0, Message::GateConfig(setup)).map_err(|e| e.to_string())?;
        let end = Instant::now() + Duration::from_secs(20);
        loop {
            let left = end.saturating_duration_since(Instant::now());
            match vm.channel.control(left) {
                Ok(Message::GateReady { .. }) => return Ok(()),
                Ok(Message::Error { message }) => {
                    return Err(format!("the guest could not set up gated commands ({message}); nothing ran"))
                }
                Ok(_) => {}
                Err(e) => return Err(format!("the guest did not set up gated commands: {e}; nothing ran")),
            }
        }
    }
}

/// Submits to the VM's channel once it is set (after boot).
#[derive(Clone, Default)]
pub struct VmExecutor {
    pub channel: Arc<OnceLock<Channel>>,
}

impl Executor for VmExecutor {
    fn submit(&self, job: &Job, stdio: [OwnedFd; 3]) -> Result<Box<dyn RunningJob>, String> {
        let ch = self.channel.get().ok_or("the VM is not running")?;
        let stream = ch.gate_streams.stream_of(stdio[0].as_fd()).ok_or("the request did not come through the VM's gate relay")?;
        drop(stdio);
        let gj = GatedJob {
            command: job.command.clone(),
            args: job.args.clone(),
            cwd: job.cwd.clone(),
            env: job.env.clone(),
            timeout_ms: job.timeout_ms,
        };
        let es = ch.gated(stream, gj).map_err(|e| e.to_string())?;
        Ok(Box::new(VmJob { ch: ch.clone(), stream, es, timeout: job.timeout_ms.map(Duration::from_millis) }))
    }
}

struct VmJob {
    ch: Channel,
    stream: u32,
    es: ExecStream,
    timeout: Option<Duration>,
}

impl RunningJob for VmJob {
    fn release(&self) {
        let _ = self.ch.send(self.stream, Message::GatedRelease);
    }

    fn signaller(&self) -> Box<dyn Fn(i32) + Send + Sync> {
        let (ch, stream) = (self.ch.clone(), self.stream);
        Box::new(move |signo| {
            let _ = ch.send(stream, Message::GatedSignal { signo });
        })
    }

    fn wait(self: Box<Self>) -> Result<Outcome, String> {
        let deadline = self.timeout.map(|t| Instant::now() + t);
        let mut timed_out = false;
        let mut error = None;
        loop {
            let left = match deadline {
                Some(d) if !timed_out => d.saturating_duration_since(Instant::now()),
                _ => Duration::from_secs(3600),
            };
            match self.es.recv_timeout(left) {
                Ok(Some(Message::GatedExit(s))) => {
                    if let Some(message) = error {
                        return Err(message);
                    }
                    let timed_out = timed_out || s.timed_out;
                    // Never trust the guest's numbers with arithmetic that can overflow.
                    let exit_code = if timed_out { 124 } else { s.code.unwrap_or_else(|| s.signal.unwrap_or(0).clamp(0, 127) + 128) };
                    return Ok(Outcome { exit_code, timed_out, bytes_out: s.bytes_out });
                }
                Ok(Some(Message::Error { message })) => error = Some(message),
                Ok(Some(_)) => {}
                Ok(None) => {
                    if deadline.is_some_and(|d| Instant::now() >= d) && !timed_out {
                        timed_out = true;
                        let _ = self.ch.send(self.stream, Message::GatedSignal { signo: libc::SIGKILL });
                    }
                }
                Err(e) => return Err(format!("the VM stopped answering: {e}")),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use clawkeep_sandbox::vm::gate_relay::inode;
    use clawkeep_sandbox::vm::guest_proto::{read_frame, write_frame, GatedExitStatus};
    use std::os::unix::net::UnixStream;

    fn job(timeout_ms: Option<u64>) -> Job {
        Job { command: "uname".into(), args: vec!["-s".into()], cwd: "/workspace".into(), env: vec![], timeout_ms, relay: true }
    }

    /// A VmExecutor on a channel whose far end the test plays as the guest,
    /// and the placeholder descriptors the gate would hold for stream 5.
    fn setup() -> (VmExecutor, UnixStream, [OwnedFd; 3]) {
        let (host, guest) = UnixStream::pair().unwrap();
        let ch = Channel::from_stream(host, Default::default()).unwrap();
        let (_near, far) = UnixStream::pair().unwrap();
        ch.gate_streams.insert(inode(far.as_fd()).unwrap(), 5);
        let fd = OwnedFd::from(far);
        let stdio = [fd.try_clone().unwrap(), fd.try_clone().unwrap(), fd];
        let ex = VmExecutor::default();
        let _ = ex.channel.set(ch);
        (ex, guest, stdio)
    }

    fn next(guest: &mut UnixStream) -> (u32, Message) {
        let f = read_frame(guest).unwrap().unwrap();
        (f.stream, Message::from_frame(f).unwrap())
    }

    #[test]
    fn jobs_go_to_the_shims_stream_and_exit_with_its_code() {
        let (ex, mut guest, stdio) = setup();
        let running = ex.submit(&job(None), stdio).unwrap();
        let (stream, m) = next(&mut guest);
        assert_eq!(stream, 5);
        assert!(matches!(m, Message::GatedExec(j) if j.command == "uname" && j.args == ["-s"]));
        running.release();
        assert_eq!(next(&mut guest), (5, Message::GatedRelease));
        running.signaller()(2);
        assert_eq!(next(&mut guest), (5, Message::GatedSignal { signo: 2 }));
        let st = GatedExitStatus { code: Some(3), signal: None, timed_out: false, bytes_out: None };
        write_frame(&mut guest, &Message::GatedExit(st).into_frame(5)).unwrap();
        assert_eq!(running.wait().unwrap(), Outcome { exit_code: 3, timed_out: false, bytes_out: None });
        // A descriptor that is no relay's placeholder is refused.
        let (a, _b) = UnixStream::pair().unwrap();
        let fd = OwnedFd::from(a);
        let other = [fd.try_clone().unwrap(), fd.try_clone().unwrap(), fd];
        assert!(ex.submit(&job(None), other).is_err());
    }

    #[test]
    fn a_timeout_kills_and_reports_124() {
        let (ex, mut guest, stdio) = setup();
        let running = ex.submit(&job(Some(50)), stdio).unwrap();
        let _ = next(&mut guest);
        running.release();
        let waiter = std::thread::spawn(move || running.wait());
        assert_eq!(next(&mut guest), (5, Message::GatedRelease));
        assert_eq!(next(&mut guest), (5, Message::GatedSignal { signo: libc::SIGKILL }));
        let st = GatedExitStatus { code: None, signal: Some(9), timed_out: false, bytes_out: None };
        write_frame(&mut guest, &Message::GatedExit(st).into_frame(5)).unwrap();
        assert_eq!(waiter.join().unwrap().unwrap(), Outcome { exit_code: 124, timed_out: true, bytes_out: None });
    }
}
