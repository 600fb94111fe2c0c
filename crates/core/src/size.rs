//! Human sizes: `512M`, `1.5GiB`, `1048576`. Binary units (K = 1024) because
//! that is what memory limits mean to every kernel interface we write to.

use thiserror::Error;

#[derive(Debug, Error, PartialEq, Eq)]
#[error("invalid size '{input}': {why}; use a number with an optional unit, e.g. 512M or 2G")]
pub struct SizeError {
    pub input: String,
    pub why: &'static str,
}

/// Parses a size in bytes. Accepts an optional unit K, M, G, T (with or
/// without a trailing `B` / `iB`, any case); all units are powers of 1024.
pub fn parse_size(input: &str) -> Result<u64, SizeError> {
    let err = |why| SizeError { input: input.to_string(), why };
    let s = input.trim();
    let split = s.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    if num.is_empty() {
        return Err(err("no number"));
    }
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        "t" | "tb" | "tib" => 1 << 40,
        _ => return Err(err("unknown unit")),
    };
    let value: f64 = num.parse().map_err(|_| err("not a number"))?;
    let bytes = value * mult as f64;
    if !bytes.is_finite() || bytes >= u64::MAX as f64 {
        return Err(err("too large"));
    }
    if bytes < 1.0 {
        return Err(err("must be at least 1 byte"));
    }
    Ok(bytes as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units() {
        assert_eq!(parse_size("1024"), Ok(1024));
        assert_eq!(parse_size("4k"), Ok(4096));
        assert_eq!(parse_size("512M"), Ok(512 << 20));
        assert_eq!(parse_size("1.5GiB"), Ok(3 << 29));
        assert_eq!(parse_size("2gb"), Ok(2 << 30));
    }

    #[test]
    fn rejects_garbage() {
        for bad in ["", "M", "12XB", "-5M", "0", "1..2G", "99999999999T"] {
            assert!(parse_size(bad).is_err(), "{bad} should be rejected");
        }
    }
}
