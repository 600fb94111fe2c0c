//! The kernel command line: what the guest needs to set up its root.
//!
//! Only the `clawkeep.*` keys are read here; `module.param=value` pairs are
//! collected for `modules` (no modprobe runs in the initramfs to do it).

use std::fmt;

/// The dm-verity parameters and the guest's switches, from /proc/cmdline.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct BootParams {
    pub roothash: String,
    /// Hex salt; empty when the image has none.
    pub salt: String,
    pub datablocks: u64,
    /// Hash tree start, in 4096-byte blocks from the start of /dev/vda.
    pub hashstart: u64,
    /// Test switch: never become ready (the host's bounded wait is tested).
    pub hang: bool,
    /// Relay the proxy service: guest port to listen on (127.0.0.1:PORT).
    pub proxy_port: Option<u16>,
    /// Serve the channel on this vsock port instead of the virtio-serial
    /// port (Firecracker has vsock, not virtio-serial).
    pub vsock_port: Option<u32>,
    /// `name.param=value` words, for modules loaded later.
    pub module_params: Vec<(String, String)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CmdlineError {
    Missing(&'static str),
    Invalid { key: &'static str, value: String },
}

impl fmt::Display for CmdlineError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CmdlineError::Missing(k) => write!(f, "kernel command line has no {k}="),
            CmdlineError::Invalid { key, value } => write!(f, "kernel command line: invalid {key}={value}"),
        }
    }
}

fn is_hex(s: &str) -> bool {
    !s.is_empty() && s.len() % 2 == 0 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Parses the words of a kernel command line (quotes are not used by us).
pub fn parse(cmdline: &str) -> Result<BootParams, CmdlineError> {
    let mut p = BootParams::default();
    let (mut hash, mut blocks, mut start) = (None, None, None);
    for word in cmdline.split_ascii_whitespace() {
        let (k, v) = word.split_once('=').unwrap_or((word, ""));
        match k {
            "clawkeep.roothash" => hash = Some(v.to_string()),
            "clawkeep.salt" => p.salt = if v == "-" { String::new() } else { v.to_string() },
            "clawkeep.datablocks" => blocks = Some(v.to_string()),
            "clawkeep.hashstart" => start = Some(v.to_string()),
            "clawkeep.hang" => p.hang = v != "0",
            "clawkeep.vsock" => {
                p.vsock_port = Some(v.parse().map_err(|_| CmdlineError::Invalid { key: "clawkeep.vsock", value: v.into() })?)
            }
            "clawkeep.proxyport" => {
                p.proxy_port = Some(v.parse().map_err(|_| CmdlineError::Invalid { key: "clawkeep.proxyport", value: v.into() })?)
            }
            _ => {
                if let Some((module, param)) = k.split_once('.') {
                    if !module.is_empty() && !param.is_empty() && !module.starts_with("clawkeep") {
                        p.module_params.push((module.replace('-', "_"), word[module.len() + 1..].to_string()));
                    }
                }
            }
        }
    }
    p.roothash = hash.ok_or(CmdlineError::Missing("clawkeep.roothash"))?;
    if !is_hex(&p.roothash) {
        return Err(CmdlineError::Invalid { key: "clawkeep.roothash", value: p.roothash });
    }
    if !p.salt.is_empty() && !is_hex(&p.salt) {
        return Err(CmdlineError::Invalid { key: "clawkeep.salt", value: p.salt });
    }
    let num = |key: &'static str, v: Option<String>| -> Result<u64, CmdlineError> {
        let v = v.ok_or(CmdlineError::Missing(key))?;
        v.parse().map_err(|_| CmdlineError::Invalid { key, value: v })
    };
    p.datablocks = num("clawkeep.datablocks", blocks)?;
    p.hashstart = num("clawkeep.hashstart", start)?;
    if p.datablocks == 0 || p.hashstart < p.datablocks {
        return Err(CmdlineError::Invalid { key: "clawkeep.hashstart", value: format!("{} (data blocks {})", p.hashstart, p.datablocks) });
    }
    Ok(p)
}

impl BootParams {
    /// The parameter string for `finit_module` of one module, e.g.
    /// `device=4K@0xfeb00e00:12` from `virtio_mmio.device=...`.
    pub fn params_for(&self, module: &str) -> String {
        let module = module.replace('-', "_");
        self.module_params.iter().filter(|(m, _)| *m == module).map(|(_, v)| v.as_str()).collect::<Vec<_>>().join(" ")
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const LINE: &str = "console=ttyS0 panic=-1 rdinit=/init virtio_mmio.device=512@0xfeb00e00:12 virtio_mmio.device=512@0xfeb00c00:13 \
        clawkeep.roothash=ab12 clawkeep.salt=cd34 clawkeep.datablocks=100 clawkeep.hashstart=101";

    #[test]
    fn reads_verity_keys_and_module_params() {
        let p = parse(LINE).unwrap();
        assert_eq!((p.roothash.as_str(), p.salt.as_str(), p.datablocks, p.hashstart), ("ab12", "cd34", 100, 101));
        assert!(!p.hang);
        assert_eq!(p.params_for("virtio_mmio"), "device=512@0xfeb00e00:12 device=512@0xfeb00c00:13");
        assert_eq!(p.params_for("ext4"), "");
    }

    #[test]
    fn missing_or_bad_values_name_the_key() {
        assert_eq!(parse("clawkeep.salt=00"), Err(CmdlineError::Missing("clawkeep.roothash")));
        assert!(matches!(
            parse(&LINE.replace("roothash=ab12", "roothash=xyz")),
            Err(CmdlineError::Invalid { key: "clawkeep.roothash", .. })
        ));
        assert!(matches!(
            parse(&LINE.replace("datablocks=100", "datablocks=ten")),
            Err(CmdlineError::Invalid { key: "clawkeep.datablocks", .. })
        ));
        assert!(matches!(parse(&LINE.replace("hashstart=101", "hashstart=5")), Err(CmdlineError::Invalid { .. })));
    }

    #[test]
    fn hang_and_empty_salt() {
        let p = parse(&format!("{} clawkeep.hang=1 clawkeep.vsock=1024", LINE.replace("salt=cd34", "salt=-"))).unwrap();
        assert!(p.hang);
        assert_eq!((p.vsock_port, parse(LINE).unwrap().vsock_port), (Some(1024), None));
        assert_eq!(p.salt, "");
    }
}
