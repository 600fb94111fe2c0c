//! The on-disk line format: one compact JSON object per line, with the header
//! keys `seq`, `ts`, `prev`, `kind` first and the caller's fields after them
//! in sorted key order. A line never contains a raw newline (JSON escapes it),
//! so `\n` is an unambiguous record separator.
//!
//! The chain hashes the exact bytes of a line (without its `\n`), so the
//! serialization only has to be deterministic at write time; readers never
//! re-serialize.

use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::error::AuditError;

/// The `prev` value of the first line: 64 zeros, the width of a SHA-256 hex
/// digest.
pub const GENESIS_PREV: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Keys the log writes itself; a caller field with one of these names would
/// let an event lie about its place in the chain.
const RESERVED: [&str; 4] = ["seq", "ts", "prev", "kind"];

/// Lowercase hex SHA-256 of one line's bytes, without its trailing `\n`.
pub fn hash_line(line: &[u8]) -> String {
    hex::encode(Sha256::digest(line))
}

/// Checks that `fields` is an object with no reserved key and unwraps it.
pub(crate) fn check_fields(fields: Value) -> Result<Map<String, Value>, AuditError> {
    let map = match fields {
        Value::Object(map) => map,
        other => return Err(AuditError::FieldsNotObject { found: json_type(&other) }),
    };
    if let Some(key) = map.keys().find(|k| RESERVED.contains(&k.as_str())) {
        return Err(AuditError::ReservedField { key: key.clone() });
    }
    Ok(map)
}

/// Serializes one event as a single line, without the trailing `\n`.
pub(crate) fn encode(seq: u64, ts: &str, prev: &str, kind: &str, fields: &Map<String, Value>) -> String {
    // `Value`'s Display is compact JSON and cannot fail, unlike `to_string`
    // on an arbitrary `Serialize`.
    let mut out = format!("{{\"seq\":{seq},\"ts\":{},\"prev\":{},\"kind\":{}", Value::from(ts), Value::from(prev), Value::from(kind));
    for (key, value) in fields {
        out.push(',');
        out.push_str(&Value::from(key.as_str()).to_string());
        out.push(':');
        out.push_str(&value.to_string());
    }
    out.push('}');
    out
}

/// The `seq` of a line the log wrote, or why it cannot be read.
pub(crate) fn parse_seq(line: &[u8]) -> Result<u64, String> {
    let value: Value = serde_json::from_slice(line).map_err(|e| format!("not valid JSON: {e}"))?;
    value.get("seq").and_then(Value::as_u64).ok_or_else(|| "no integer seq".to_owned())
}

fn json_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn header_comes_first_and_fields_are_escaped() {
        let fields = check_fields(json!({"b": 1, "a": "x\ny\"z"})).expect("object");
        let line = encode(7, "2026-01-01T00:00:00.000Z", GENESIS_PREV, "run.start", &fields);
        let expected = format!(
            "{{\"seq\":7,\"ts\":\"2026-01-01T00:00:00.000Z\",\"prev\":\"{GENESIS_PREV}\",\
             \"kind\":\"run.start\",\"a\":\"x\\ny\\\"z\",\"b\":1}}"
        );
        assert_eq!(line, expected);
        assert!(!line.contains('\n'));
        assert_eq!(parse_seq(line.as_bytes()), Ok(7));
    }

    #[test]
    fn empty_fields_still_close_the_object() {
        let line = encode(0, "t", GENESIS_PREV, "k", &Map::new());
        let value: Value = serde_json::from_str(&line).expect("valid JSON");
        assert_eq!(value["kind"], "k");
        assert_eq!(value.as_object().map(Map::len), Some(4));
    }

    #[test]
    fn rejects_non_objects_and_reserved_keys() {
        for (input, found) in [(json!([1]), "an array"), (json!("s"), "a string"), (json!(null), "null")] {
            match check_fields(input) {
                Err(AuditError::FieldsNotObject { found: got }) => assert_eq!(got, found),
                other => panic!("expected FieldsNotObject, got {other:?}"),
            }
        }
        for key in RESERVED {
            match check_fields(json!({ key: 1 })) {
                Err(AuditError::ReservedField { key: got }) => assert_eq!(got, key),
                other => panic!("expected ReservedField, got {other:?}"),
            }
        }
    }

    #[test]
    fn hash_is_lowercase_sha256_hex() {
        // SHA-256("abc") from FIPS 180-2, appendix B.1.
        assert_eq!(hash_line(b"abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
        assert_eq!(GENESIS_PREV.len(), 64);
    }

    #[test]
    fn parse_seq_names_the_problem() {
        assert!(parse_seq(b"{\"seq\":").expect_err("torn").starts_with("not valid JSON"));
        assert_eq!(parse_seq(b"{\"seq\":-1}"), Err("no integer seq".to_owned()));
    }
}
