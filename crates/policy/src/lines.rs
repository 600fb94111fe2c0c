//! Where each rule starts in the source text, for decisions and errors.
//!
//! serde_norway reports positions only in errors, so there are two ways here:
//! a scan of the text that understands the block-sequence layout every
//! example uses (`rules:` then `- ` items), and, when the scan does not find
//! exactly as many items as YAML did (flow style, quoted keys, odd layouts),
//! a probe that re-reads the document and fails on purpose at rule N, taking
//! the line from that error. The probe is exact for any YAML but costs one
//! parse per rule, so it is only the fallback.

use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

/// The 1-based line of each of the `count` rules (0 where none can be found).
pub(crate) fn rule_lines(text: &str, count: usize) -> Vec<usize> {
    if count == 0 {
        return Vec::new();
    }
    match scan_block_rules(text) {
        Some(lines) if lines.len() == count => lines,
        _ => (0..count).map(|i| probe_rule_line(text, i).unwrap_or(0)).collect(),
    }
}

/// Lines of the `- ` items of a top-level block sequence under `rules:`.
/// `None` when the layout is not that simple one.
pub(crate) fn scan_block_rules(text: &str) -> Option<Vec<usize>> {
    let mut lines = text.lines().enumerate().map(|(i, l)| (i + 1, l));
    let mut top: Option<usize> = None;
    // Find `rules:` at the indentation of the document's top-level keys.
    loop {
        let (_, line) = lines.next()?;
        let Some(indent) = content_indent(line)? else { continue };
        let body = &line[indent..];
        if top.is_none() && (body.starts_with('%') || body.starts_with("---")) {
            continue;
        }
        let top_indent = *top.get_or_insert(indent);
        if indent != top_indent {
            continue;
        }
        if let Some(rest) = strip_key(body, "rules") {
            let rest = rest.trim_start();
            if !(rest.is_empty() || rest.starts_with('#')) {
                return None; // flow sequence, anchor, alias or tag: leave it to the probe
            }
            break;
        }
    }
    let mut found = Vec::new();
    let mut item_indent: Option<usize> = None;
    for (number, line) in lines {
        let Some(indent) = content_indent(line)? else { continue };
        let body = &line[indent..];
        let is_item = body == "-" || body.starts_with("- ");
        match item_indent {
            None if is_item => {
                item_indent = Some(indent);
                found.push(number);
            }
            None => return None,
            Some(want) if indent < want => break,
            Some(want) if indent == want => {
                if !is_item {
                    break;
                }
                found.push(number);
            }
            Some(_) => {}
        }
    }
    Some(found)
}

/// `Some(Some(indent))` for a line with content, `Some(None)` for a blank or
/// comment-only line, `None` for a tab in the indentation (not handled here).
fn content_indent(line: &str) -> Option<Option<usize>> {
    let indent = line.len() - line.trim_start_matches(' ').len();
    let body = &line[indent..];
    if body.starts_with('\t') {
        return None;
    }
    let body = body.trim_end();
    Some((!body.is_empty() && !body.starts_with('#')).then_some(indent))
}

/// The text after `key:` (plain or quoted key), or `None`.
fn strip_key<'a>(body: &'a str, key: &str) -> Option<&'a str> {
    let rest = [format!("\"{key}\""), format!("'{key}'"), key.to_string()].iter().find_map(|k| body.strip_prefix(k.as_str()))?;
    let rest = rest.trim_start_matches(' ').strip_prefix(':')?;
    (rest.is_empty() || rest.starts_with([' ', '\t'])).then_some(rest)
}

/// Marker message the probe fails with; never shown to anyone.
const PROBE: &str = "clawkeep-policy line probe";

/// Re-reads `text` and stops with an error at the start of rule `target`;
/// the error's location is the rule's line.
pub(crate) fn probe_rule_line(text: &str, target: usize) -> Option<usize> {
    let err = ProbeDoc { target }.deserialize(serde_norway::Deserializer::from_str(text)).err()?;
    if !err.to_string().contains(PROBE) {
        return None;
    }
    err.location().map(|l| l.line())
}

struct ProbeDoc {
    target: usize,
}

impl<'de> DeserializeSeed<'de> for ProbeDoc {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for ProbeDoc {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a policy mapping")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(key) = map.next_key::<String>()? {
            if key == "rules" {
                map.next_value_seed(ProbeRules { target: self.target })?;
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(())
    }
}

struct ProbeRules {
    target: usize,
}

impl<'de> DeserializeSeed<'de> for ProbeRules {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for ProbeRules {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a list of rules")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        for _ in 0..self.target {
            if seq.next_element::<IgnoredAny>()?.is_none() {
                return Ok(());
            }
        }
        seq.next_element_seed(FailHere)?;
        Ok(())
    }
}

/// Fails as soon as the deserializer hands it the node, so serde_norway
/// stamps the error with that node's start.
struct FailHere;

impl<'de> DeserializeSeed<'de> for FailHere {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for FailHere {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a rule")
    }
    fn visit_map<A: MapAccess<'de>>(self, _map: A) -> Result<(), A::Error> {
        Err(de::Error::custom(PROBE))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, _seq: A) -> Result<(), A::Error> {
        Err(de::Error::custom(PROBE))
    }
    fn visit_str<E: de::Error>(self, _v: &str) -> Result<(), E> {
        Err(E::custom(PROBE))
    }
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Err(E::custom(PROBE))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BLOCK: &str = "\
# comment
default_action: deny
rules:
  # first
  - command: git
    reason: |
      - not an item
      rules: neither

  - command: npm
    args:
      - install
  -
    command: ls
allowed_paths: []
";

    #[test]
    fn scan_finds_block_items_and_skips_nested_lists() {
        assert_eq!(scan_block_rules(BLOCK), Some(vec![5, 10, 13]));
    }

    #[test]
    fn probe_agrees_with_the_scan_on_block_layouts() {
        for (i, want) in [5, 10, 14].into_iter().enumerate() {
            // The probe reports the mapping's first key, one line below a bare `-`.
            assert_eq!(probe_rule_line(BLOCK, i), Some(want), "rule {i}");
        }
    }

    #[test]
    fn scan_and_probe_agree_on_the_shipped_policies() {
        let texts = [
            include_str!("../default-policy.yaml"),
            include_str!("../../../deploy/policies/coding-agent.yaml"),
            include_str!("../../../deploy/policies/read-only-explorer.yaml"),
            include_str!("../../../deploy/policies/clawrden-compat.yaml"),
        ];
        for text in texts {
            let scanned = scan_block_rules(text).unwrap();
            let probed: Vec<usize> = (0..scanned.len()).map(|i| probe_rule_line(text, i).unwrap()).collect();
            assert_eq!(scanned, probed);
            assert!(probe_rule_line(text, scanned.len()).is_none(), "no rule past the end");
        }
    }

    #[test]
    fn compact_sequences_at_the_key_indent_are_found() {
        let text = "rules:\n- command: a\n  action: allow\n- command: b\n  action: deny\ndefault_action: ask\n";
        assert_eq!(scan_block_rules(text), Some(vec![2, 4]));
        assert_eq!(rule_lines(text, 2), vec![2, 4]);
    }

    #[test]
    fn flow_style_falls_back_to_the_probe() {
        let text = "default_action: deny\nrules: [\n  {command: a, action: allow},\n\n  {command: b, action: deny}]\n";
        assert_eq!(scan_block_rules(text), None);
        assert_eq!(rule_lines(text, 2), vec![3, 5]);
    }

    #[test]
    fn quoted_keys_and_indented_documents_work() {
        let text = "---\n  \"rules\":\n    - command: a\n    - command: b\n  default_action: ask\n";
        assert_eq!(rule_lines(text, 2), vec![3, 4]);
    }

    #[test]
    fn a_miscount_uses_the_probe() {
        // The continuation line of a quoted scalar looks like an item to the scan.
        let text = "rules:\n  - command: a\n    reason: \"x\n  - y\"\n  - command: b\n";
        assert_eq!(scan_block_rules(text).map(|l| l.len()), Some(3));
        assert_eq!(rule_lines(text, 2), vec![2, 5]);
    }
}
