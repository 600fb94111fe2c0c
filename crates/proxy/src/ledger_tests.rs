use super::{format_utc, Ledger, UsageRow};

#[test]
fn formats_utc() {
    assert_eq!(format_utc(0), "1970-01-01T00:00:00Z");
    assert_eq!(format_utc(1_795_910_400), "2026-11-29T00:00:00Z");
    assert_eq!(format_utc(951_782_400 + 3661), "2000-02-29T01:01:01Z");
}

#[test]
fn records_and_filters() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("proxy.db");
    let ledger = Ledger::open(&path).expect("open");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&path).expect("meta").permissions().mode() & 0o777, 0o600);
    let row = |agent: &str, at: u64| UsageRow {
        agent: agent.into(),
        model: "m".into(),
        provider: "p".into(),
        input_tokens: 10,
        output_tokens: 5,
        cost_usd: 0.5,
        latency_ms: 3,
        status: 200,
        at: format_utc(at),
    };
    ledger.record(&row("a", 1000), 1000).expect("record");
    ledger.record(&row("b", 2000), 2000).expect("record");
    ledger.record(&row("a", 3000), 3000).expect("record");
    assert_eq!(ledger.usage(None, None).expect("all").len(), 3);
    assert_eq!(ledger.usage(Some("a"), None).expect("a").len(), 2);
    assert_eq!(ledger.usage(Some("a"), Some(&format_utc(2000))).expect("since").len(), 1);
    assert_eq!(ledger.spent_since("a", 0).expect("spent"), (30, 1.0));
}
