//! The control messages carried in frames: what each kind's payload holds,
//! and the conversion between a [`Message`] and its [`Frame`].

use super::{Frame, Kind, ProtoError};
use serde::{Deserialize, Serialize};

/// What the host asks the guest to run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecRequest {
    pub argv: Vec<String>,
    pub env: Vec<(String, String)>,
    /// Working directory inside the guest [default: /workspace].
    pub cwd: Option<String>,
    pub uid: u32,
    pub gid: u32,
    /// The host takes StdinCredit frames. A host built before flow control
    /// would end the channel on one; for it (false, absent) the guest sends
    /// none and queues that command's stdin unbounded, as it used to.
    #[serde(default)]
    pub stdin_credit: bool,
    /// Run on a terminal of this size (see the module docs); None (absent:
    /// a host built before terminals) = pipes.
    #[serde(default)]
    pub tty: Option<TtySize>,
}

/// A terminal's size in character cells.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TtySize {
    pub rows: u16,
    pub cols: u16,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReadyInfo {
    /// The guest kernel's release (uname -r).
    pub kernel: String,
    pub uptime_ms: u64,
    /// Stdin bytes per exec stream the guest accepts ahead of StdinCredit;
    /// 0 (absent: a guest built before flow control) = no limit.
    #[serde(default)]
    pub stdin_window: u32,
    /// The guest runs commands on a terminal when asked and takes Resize;
    /// false (absent: a guest built before terminals) = it does neither.
    #[serde(default)]
    pub tty: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExitStatus {
    pub code: Option<i32>,
    pub signal: Option<i32>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthInfo {
    pub uptime_ms: u64,
    pub mem_available_kb: Option<u64>,
    /// Commands started over the channel that have not exited.
    pub running: u32,
}

/// Which command names the guest masks with its gate shim.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GateSetup {
    pub commands: Vec<String>,
}

/// A command the host's gate approved, to run for the shim on this stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GatedJob {
    pub command: String,
    pub args: Vec<String>,
    pub cwd: String,
    pub env: Vec<(String, String)>,
    /// The policy's limit; the host enforces it (GatedSignal SIGKILL).
    pub timeout_ms: Option<u64>,
}

/// How a gated command ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct GatedExitStatus {
    pub code: Option<i32>,
    pub signal: Option<i32>,
    /// The guest enforces no timeout today: false (the host knows).
    pub timed_out: bool,
    /// Output goes straight to the shim's descriptors, uncounted: None.
    pub bytes_out: Option<u64>,
}

/// A guest-initiated relay: which host service the guest wants to reach.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Service {
    Proxy,
    Gate,
}

/// A decoded frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    Exec(ExecRequest),
    Stdin(Vec<u8>),
    Signal { signo: i32 },
    Health,
    Shutdown,
    GateConfig(GateSetup),
    GatedExec(GatedJob),
    GatedRelease,
    GatedSignal { signo: i32 },
    Resize(TtySize),
    Open { service: Service },
    Data(Vec<u8>),
    Close,
    Ready(ReadyInfo),
    Started { pid: i32 },
    Stdout(Vec<u8>),
    Stderr(Vec<u8>),
    Exit(ExitStatus),
    HealthOk(HealthInfo),
    Error { message: String },
    GateReady { masked: u32 },
    GatedExit(GatedExitStatus),
    StdinCredit { bytes: u32 },
}

#[derive(Serialize, Deserialize)]
struct Signo {
    signo: i32,
}
#[derive(Serialize, Deserialize)]
struct Pid {
    pid: i32,
}
#[derive(Serialize, Deserialize)]
struct Msg {
    message: String,
}
#[derive(Serialize, Deserialize)]
struct Masked {
    masked: u32,
}
#[derive(Serialize, Deserialize)]
struct Bytes {
    bytes: u32,
}
#[derive(Serialize, Deserialize)]
struct Svc {
    service: Service,
}

fn json<T: Serialize>(v: &T) -> Vec<u8> {
    // Serializing these plain structs cannot fail.
    serde_json::to_vec(v).unwrap_or_default()
}

fn parse<'a, T: Deserialize<'a>>(kind: Kind, p: &'a [u8]) -> Result<T, ProtoError> {
    serde_json::from_slice(p).map_err(|e| ProtoError::Payload { kind, message: e.to_string() })
}

impl Message {
    pub fn kind(&self) -> Kind {
        match self {
            Message::Exec(_) => Kind::Exec,
            Message::Stdin(_) => Kind::Stdin,
            Message::Signal { .. } => Kind::Signal,
            Message::Health => Kind::Health,
            Message::Shutdown => Kind::Shutdown,
            Message::GateConfig(_) => Kind::GateConfig,
            Message::GatedExec(_) => Kind::GatedExec,
            Message::GatedRelease => Kind::GatedRelease,
            Message::GatedSignal { .. } => Kind::GatedSignal,
            Message::Resize(_) => Kind::Resize,
            Message::Open { .. } => Kind::Open,
            Message::Data(_) => Kind::Data,
            Message::Close => Kind::Close,
            Message::Ready(_) => Kind::Ready,
            Message::Started { .. } => Kind::Started,
            Message::Stdout(_) => Kind::Stdout,
            Message::Stderr(_) => Kind::Stderr,
            Message::Exit(_) => Kind::Exit,
            Message::HealthOk(_) => Kind::HealthOk,
            Message::Error { .. } => Kind::Error,
            Message::GateReady { .. } => Kind::GateReady,
            Message::GatedExit(_) => Kind::GatedExit,
            Message::StdinCredit { .. } => Kind::StdinCredit,
        }
    }

    pub fn into_frame(self, stream: u32) -> Frame {
        let kind = self.kind();
        let payload = match self {
            Message::Exec(r) => json(&r),
            Message::Stdin(d) | Message::Data(d) | Message::Stdout(d) | Message::Stderr(d) => d,
            Message::Signal { signo } => json(&Signo { signo }),
            Message::Health | Message::Shutdown | Message::Close | Message::GatedRelease => Vec::new(),
            Message::GateConfig(g) => json(&g),
            Message::GatedExec(j) => json(&j),
            Message::GatedSignal { signo } => json(&Signo { signo }),
            Message::Resize(s) => json(&s),
            Message::GateReady { masked } => json(&Masked { masked }),
            Message::GatedExit(s) => json(&s),
            Message::Open { service } => json(&Svc { service }),
            Message::Ready(r) => json(&r),
            Message::Started { pid } => json(&Pid { pid }),
            Message::Exit(s) => json(&s),
            Message::HealthOk(h) => json(&h),
            Message::Error { message } => json(&Msg { message }),
            Message::StdinCredit { bytes } => json(&Bytes { bytes }),
        };
        Frame { kind, stream, payload }
    }

    pub fn from_frame(f: Frame) -> Result<Message, ProtoError> {
        let k = f.kind;
        let p = f.payload;
        Ok(match k {
            Kind::Exec => Message::Exec(parse(k, &p)?),
            Kind::Stdin => Message::Stdin(p),
            Kind::Signal => Message::Signal { signo: parse::<Signo>(k, &p)?.signo },
            Kind::Health => Message::Health,
            Kind::Shutdown => Message::Shutdown,
            Kind::GateConfig => Message::GateConfig(parse(k, &p)?),
            Kind::GatedExec => Message::GatedExec(parse(k, &p)?),
            Kind::GatedRelease => Message::GatedRelease,
            Kind::GatedSignal => Message::GatedSignal { signo: parse::<Signo>(k, &p)?.signo },
            Kind::Resize => Message::Resize(parse(k, &p)?),
            Kind::Open => Message::Open { service: parse::<Svc>(k, &p)?.service },
            Kind::Data => Message::Data(p),
            Kind::Close => Message::Close,
            Kind::Ready => Message::Ready(parse(k, &p)?),
            Kind::Started => Message::Started { pid: parse::<Pid>(k, &p)?.pid },
            Kind::Stdout => Message::Stdout(p),
            Kind::Stderr => Message::Stderr(p),
            Kind::Exit => Message::Exit(parse(k, &p)?),
            Kind::HealthOk => Message::HealthOk(parse(k, &p)?),
            Kind::Error => Message::Error { message: parse::<Msg>(k, &p)?.message },
            Kind::GateReady => Message::GateReady { masked: parse::<Masked>(k, &p)?.masked },
            Kind::GatedExit => Message::GatedExit(parse(k, &p)?),
            Kind::StdinCredit => Message::StdinCredit { bytes: parse::<Bytes>(k, &p)?.bytes },
        })
    }
}
