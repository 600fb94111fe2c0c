//! Token usage read from provider responses: whole JSON bodies, and SSE
//! streams scanned chunk by chunk as they pass through (never held back).

use serde_json::Value;

/// Anthropic bills cache reads and writes as input too.
const INPUT_FIELDS: [&str; 4] = ["prompt_tokens", "input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens"];
const OUTPUT_FIELDS: [&str; 2] = ["completion_tokens", "output_tokens"];
/// A single SSE line longer than this is not a usage event we can trust to
/// parse; dropping it means the request is charged its full reservation.
const MAX_LINE: usize = 1024 * 1024;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    pub input_tokens: u64,
    pub output_tokens: u64,
    /// Of `input_tokens`, those written to Anthropic's prompt cache, which
    /// cost more than plain input (1.25x or 2x).
    pub cache_write_tokens: u64,
}

impl Usage {
    pub fn total(&self) -> u64 {
        self.input_tokens.saturating_add(self.output_tokens)
    }
}

/// Usage from a `usage` object in either provider's shape.
fn from_usage_object(u: &Value) -> Option<Usage> {
    let obj = u.as_object()?;
    let sum = |fields: &[&str]| fields.iter().filter_map(|f| obj.get(*f).and_then(Value::as_u64)).sum::<u64>();
    let has = |fields: &[&str]| fields.iter().any(|f| obj.get(*f).is_some_and(Value::is_u64));
    (has(&INPUT_FIELDS) || has(&OUTPUT_FIELDS)).then(|| Usage {
        input_tokens: sum(&INPUT_FIELDS),
        output_tokens: sum(&OUTPUT_FIELDS),
        cache_write_tokens: sum(&["cache_creation_input_tokens"]),
    })
}

/// Usage from a complete (non-streaming) response body; the rest of the
/// body is skipped, not built into a tree.
pub fn from_body(body: &[u8]) -> Option<Usage> {
    #[derive(serde::Deserialize)]
    struct WithUsage {
        usage: Option<Value>,
    }
    from_usage_object(&serde_json::from_slice::<WithUsage>(body).ok()?.usage?)
}

/// Scans an SSE stream for usage without buffering more than one line.
#[derive(Debug, Default)]
pub struct StreamUsage {
    /// The start of a line that the next chunk ends.
    line: Vec<u8>,
    overlong: bool,
    /// A data line that names `usage` could not be read as an event: no
    /// usage is trusted for this stream (it pays its reservation).
    unreadable_usage: bool,
    input: Option<u64>,
    output: Option<u64>,
    cache_write: u64,
}

/// The members of one SSE event that can carry usage. The rest of the event
/// (the reply's text, above all) is skipped, not built into a tree. A data
/// line that names `usage` but is not an event this reads (not an object,
/// a member twice) makes the stream's usage untrusted: the request is
/// charged its whole reservation.
#[derive(serde::Deserialize)]
struct Event {
    #[serde(rename = "type", default)]
    kind: Option<Value>,
    /// `None` when absent or null.
    #[serde(default)]
    usage: Option<Value>,
    /// Anthropic's message_start: the usage is inside.
    #[serde(default)]
    message: Option<Value>,
    /// OpenAI's Responses API: the final event carries the whole response.
    #[serde(default)]
    response: Option<Value>,
}

impl StreamUsage {
    pub fn feed(&mut self, mut chunk: &[u8]) {
        while let Some(end) = memchr::memchr(b'\n', chunk) {
            let (head, rest) = (&chunk[..end], &chunk[end + 1..]);
            if self.line.is_empty() && !self.overlong {
                // A whole line inside this chunk: read in place.
                if head.len() <= MAX_LINE {
                    self.line_done(head);
                }
            } else {
                if !self.overlong && self.line.len() + head.len() <= MAX_LINE {
                    // Taken and put back, so its buffer is reused.
                    let mut line = std::mem::take(&mut self.line);
                    line.extend_from_slice(head);
                    self.line_done(&line);
                    self.line = line;
                }
                self.line.clear();
                self.overlong = false;
            }
            chunk = rest;
        }
        if self.overlong {
            return;
        }
        if self.line.len() + chunk.len() <= MAX_LINE {
            self.line.extend_from_slice(chunk);
        } else {
            self.line.clear();
            self.overlong = true;
        }
    }

    fn line_done(&mut self, line: &[u8]) {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let Some(data) = line.strip_prefix(b"data:") else { return };
        let data = data.trim_ascii();
        if data == b"[DONE]" {
            return;
        }
        // serde would also read an array into the struct, by position.
        let parsed = if data.first() == Some(&b'{') { serde_json::from_slice::<Event>(data).ok() } else { None };
        let Some(ev) = parsed else {
            if memchr::memmem::find(data, b"usage").is_some() {
                self.unreadable_usage = true;
            }
            return;
        };
        let nested = |v: &Option<Value>| v.as_ref().and_then(|m| m.get("usage")).and_then(from_usage_object);
        match ev.kind.as_ref().and_then(Value::as_str) {
            Some("message_start") => {
                if let Some(u) = nested(&ev.message) {
                    // Its output count is a placeholder; message_delta has the real one.
                    self.input = Some(u.input_tokens);
                    self.cache_write = u.cache_write_tokens;
                }
            }
            Some("message_delta") => {
                if let Some(u) = ev.usage.as_ref().and_then(from_usage_object) {
                    if u.input_tokens > 0 {
                        self.input = Some(u.input_tokens);
                        self.cache_write = u.cache_write_tokens;
                    }
                    self.output = Some(u.output_tokens);
                }
            }
            Some("response.completed") | Some("response.incomplete") => {
                if let Some(u) = nested(&ev.response) {
                    self.input = Some(u.input_tokens);
                    self.cache_write = u.cache_write_tokens;
                    self.output = Some(u.output_tokens);
                }
            }
            _ => {
                if let Some(u) = ev.usage.as_ref().and_then(from_usage_object) {
                    self.input = Some(u.input_tokens);
                    self.cache_write = u.cache_write_tokens;
                    self.output = Some(u.output_tokens);
                }
            }
        }
    }

    /// The usage seen, if the stream reported both input and output.
    pub fn finish(&self) -> Option<Usage> {
        if self.unreadable_usage {
            return None;
        }
        Some(Usage { input_tokens: self.input?, output_tokens: self.output?, cache_write_tokens: self.cache_write })
    }
}

#[cfg(test)]
#[path = "usage_tests.rs"]
mod tests;
