//! `clawkeep secret set|list|rm`: provider keys in the sealed store. A
//! value comes from stdin or from a named environment variable — never from
//! argv, where every local user could read it in /proc.

use crate::Failure;
use clawkeep_identity::{IdentityPaths, MasterKey, SealedStore, MASTER_KEY_ENV};
use std::io::{IsTerminal, Read};
use std::path::Path;

fn open(state: &Path) -> Result<SealedStore, Failure> {
    let paths = IdentityPaths::under(state);
    let master =
        MasterKey::from_env_or_file(std::env::var(MASTER_KEY_ENV).ok(), &paths.master_key).map_err(|e| Failure::usage(e.to_string()))?;
    SealedStore::open(&paths.secrets, master).map_err(|e| Failure::runtime(e.to_string()))
}

pub fn set(state: &Path, name: &str, from_env: Option<&str>) -> Result<u8, Failure> {
    if !clawkeep_identity::sealed::valid_name(name) {
        return Err(Failure::usage(format!("invalid secret name '{name}'; use 1-64 letters, digits, '.', '_' or '-'")));
    }
    let value = match from_env {
        Some(var) => std::env::var(var).map_err(|_| Failure::usage(format!("--from-env {var}: the variable is not set")))?.into_bytes(),
        None => {
            if std::io::stdin().is_terminal() {
                eprintln!("enter the value for {name}, then Ctrl-D:");
            }
            let mut v = Vec::new();
            std::io::stdin().read_to_end(&mut v).map_err(|e| Failure::runtime(format!("reading the value from stdin: {e}")))?;
            // A trailing newline from `echo` or a terminal is not part of a key.
            while v.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
                v.pop();
            }
            v
        }
    };
    if value.is_empty() {
        return Err(Failure::usage(format!("the value for {name} is empty; pipe it on stdin or use --from-env VAR")));
    }
    open(state)?.set(name, &value).map_err(|e| Failure::runtime(e.to_string()))?;
    println!("sealed {name}");
    Ok(0)
}

pub fn list(state: &Path, json: bool) -> Result<u8, Failure> {
    let names = open(state)?.list().map_err(|e| Failure::runtime(e.to_string()))?;
    if json {
        println!("{}", serde_json::json!(names));
    } else if names.is_empty() {
        println!("no secrets sealed in {}", IdentityPaths::under(state).secrets.display());
    } else {
        for n in names {
            println!("{n}");
        }
    }
    Ok(0)
}

pub fn rm(state: &Path, name: &str) -> Result<u8, Failure> {
    if open(state)?.remove(name).map_err(|e| Failure::runtime(e.to_string()))? {
        println!("removed {name}");
        Ok(0)
    } else {
        Err(Failure::usage(format!("no secret named '{name}'; list them with 'clawkeep secret list'")))
    }
}
