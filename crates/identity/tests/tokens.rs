#![allow(clippy::unwrap_used, clippy::expect_used)]

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use clawkeep_identity::{KeyRing, TokenError, ISSUER};
use std::time::{Duration, SystemTime};

fn ring() -> (tempfile::TempDir, KeyRing) {
    let t = tempfile::tempdir().unwrap();
    let ring = KeyRing::open(t.path()).unwrap();
    (t, ring)
}

fn scope() -> Vec<String> {
    vec!["llm:openai".to_string(), "gate:exec".to_string()]
}

/// Replaces part `i` of a compact JWS with the base64url of `json`.
fn with_part(token: &str, i: usize, json: &str) -> String {
    let mut parts: Vec<String> = token.split('.').map(String::from).collect();
    parts[i] = URL_SAFE_NO_PAD.encode(json);
    parts.join(".")
}

fn part_json(token: &str, i: usize) -> serde_json::Value {
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(token.split('.').nth(i).unwrap()).unwrap()).unwrap()
}

#[test]
fn roundtrip() {
    let (_t, ring) = ring();
    let issued = ring.issue("agent-a", &scope(), Duration::from_secs(600)).unwrap();
    let header = part_json(&issued.token, 0);
    assert_eq!(header, serde_json::json!({"alg": "EdDSA", "typ": "JWT", "kid": ring.current_kid()}));
    let c = &issued.claims;
    assert_eq!((c.iss.as_str(), c.sub.as_str(), c.exp - c.iat), (ISSUER, "agent-a", 600));
    assert_eq!(c.scope, scope());
    assert_eq!(c.jti.len(), 32);
    assert_eq!(ring.verify(&issued.token, SystemTime::now()).unwrap(), issued.claims);
    assert_eq!(ring.verify_for(&issued.token, "agent-a", SystemTime::now()).unwrap(), issued.claims);
    let other = ring.issue("agent-a", &scope(), Duration::from_secs(600)).unwrap();
    assert_ne!(other.claims.jti, issued.claims.jti);
}

#[test]
fn expiry_with_leeway() {
    let (_t, ring) = ring();
    let now = SystemTime::now();
    let issued = ring.issue_at("a", &[], Duration::from_secs(60), now).unwrap();
    assert!(ring.verify(&issued.token, now + Duration::from_secs(75)).is_ok(), "within 30 s leeway");
    assert_eq!(ring.verify(&issued.token, now + Duration::from_secs(95)), Err(TokenError::Expired));
    assert_eq!(ring.verify(&issued.token, now + Duration::from_secs(86_400)), Err(TokenError::Expired));
}

#[test]
fn issued_in_the_future_is_not_yet_valid() {
    let (_t, ring) = ring();
    let now = SystemTime::now();
    let issued = ring.issue_at("a", &[], Duration::from_secs(600), now + Duration::from_secs(300)).unwrap();
    assert_eq!(ring.verify(&issued.token, now), Err(TokenError::NotYetValid));
    let near = ring.issue_at("a", &[], Duration::from_secs(600), now + Duration::from_secs(10)).unwrap();
    assert!(ring.verify(&near.token, now).is_ok(), "within leeway");
}

#[test]
fn tampered_payload_is_bad_signature() {
    let (_t, ring) = ring();
    let issued = ring.issue("agent-a", &scope(), Duration::from_secs(600)).unwrap();
    let mut claims = part_json(&issued.token, 1);
    claims["sub"] = "agent-b".into();
    let forged = with_part(&issued.token, 1, &claims.to_string());
    assert_eq!(ring.verify(&forged, SystemTime::now()), Err(TokenError::BadSignature));
    // A flipped signature bit too.
    let mut sig = URL_SAFE_NO_PAD.decode(issued.token.rsplit('.').next().unwrap()).unwrap();
    sig[5] ^= 1;
    let (head, _) = issued.token.rsplit_once('.').unwrap();
    let flipped = format!("{head}.{}", URL_SAFE_NO_PAD.encode(sig));
    assert_eq!(ring.verify(&flipped, SystemTime::now()), Err(TokenError::BadSignature));
}

#[test]
fn alg_none_and_hs256_are_refused() {
    let (_t, ring) = ring();
    let issued = ring.issue("a", &[], Duration::from_secs(600)).unwrap();
    let kid = ring.current_kid();
    for alg in ["none", "HS256", "eddsa", "ES256"] {
        let header = format!(r#"{{"alg":"{alg}","typ":"JWT","kid":"{kid}"}}"#);
        let token = with_part(&issued.token, 0, &header);
        assert_eq!(ring.verify(&token, SystemTime::now()), Err(TokenError::UnsupportedAlg), "{alg}");
        let (unsigned, _) = token.rsplit_once('.').unwrap();
        assert_eq!(ring.verify(&format!("{unsigned}."), SystemTime::now()), Err(TokenError::UnsupportedAlg), "{alg}");
    }
    let no_kid = with_part(&issued.token, 0, r#"{"alg":"EdDSA","typ":"JWT"}"#);
    assert_eq!(ring.verify(&no_kid, SystemTime::now()), Err(TokenError::UnknownKey));
}

#[test]
fn garbage_is_malformed() {
    let (_t, ring) = ring();
    let issued = ring.issue("a", &[], Duration::from_secs(600)).unwrap();
    let long = "a".repeat(10_000);
    let extra = format!("{}.x", issued.token);
    let padded = format!("{}=", issued.token);
    let not_json = with_part(&issued.token, 0, "not json");
    let crit = with_part(&issued.token, 0, &format!(r#"{{"alg":"EdDSA","kid":"{}","crit":["exp"]}}"#, ring.current_kid()));
    for bad in
        ["", ".", "..", "a.b", "a.b.c", "!!!.???.###", long.as_str(), extra.as_str(), padded.as_str(), not_json.as_str(), crit.as_str()]
    {
        assert_eq!(ring.verify(bad, SystemTime::now()), Err(TokenError::Malformed), "{bad:.40}");
    }
}

#[test]
fn token_from_another_ring_is_unknown_key() {
    let (_t2, other) = ring();
    let (_t, ring) = ring();
    let forged = other.issue("agent-a", &scope(), Duration::from_secs(600)).unwrap();
    assert_eq!(ring.verify(&forged.token, SystemTime::now()), Err(TokenError::UnknownKey));
    // Even when the forger claims our kid, the signature gives it away.
    let ours = format!(r#"{{"alg":"EdDSA","typ":"JWT","kid":"{}"}}"#, ring.current_kid());
    let relabelled = with_part(&forged.token, 0, &ours);
    assert_eq!(ring.verify(&relabelled, SystemTime::now()), Err(TokenError::BadSignature));
}

#[test]
fn revoked_stays_revoked_after_reopen() {
    let t = tempfile::tempdir().unwrap();
    let ring = KeyRing::open(t.path()).unwrap();
    let issued = ring.issue("a", &[], Duration::from_secs(600)).unwrap();
    let kept = ring.issue("a", &[], Duration::from_secs(600)).unwrap();
    ring.revoke(&issued.claims.jti, issued.claims.exp).unwrap();
    assert_eq!(ring.verify(&issued.token, SystemTime::now()), Err(TokenError::Revoked));
    assert!(ring.verify(&kept.token, SystemTime::now()).is_ok());
    let revoked = t.path().join("revoked.log");
    assert_eq!(std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&revoked).unwrap().permissions()) & 0o777, 0o600);
    drop(ring);

    let ring = KeyRing::open(t.path()).unwrap();
    assert_eq!(ring.verify(&issued.token, SystemTime::now()), Err(TokenError::Revoked));
    assert!(ring.verify(&kept.token, SystemTime::now()).is_ok());
}

#[test]
fn expired_revocations_are_dropped() {
    let t = tempfile::tempdir().unwrap();
    let ring = KeyRing::open(t.path()).unwrap();
    ring.revoke("old-jti", 1_000).unwrap();
    ring.revoke("live-jti", u64::MAX).unwrap();
    assert!(!ring.is_revoked("old-jti"));
    assert!(ring.is_revoked("live-jti"));
    drop(ring);
    let ring = KeyRing::open(t.path()).unwrap();
    assert!(!ring.is_revoked("old-jti") && ring.is_revoked("live-jti"));
    assert!(ring.revoke("", 1).is_err());
    assert!(ring.revoke("two words", 1).is_err());
}

#[test]
fn verify_for_checks_the_agent() {
    let (_t, ring) = ring();
    let issued = ring.issue("agent-a", &[], Duration::from_secs(600)).unwrap();
    assert_eq!(ring.verify_for(&issued.token, "agent-b", SystemTime::now()), Err(TokenError::WrongAgent));
    assert!(ring.issue("", &[], Duration::from_secs(1)).is_err());
}

#[test]
fn token_errors_do_not_echo_the_token() {
    let (_t, ring) = ring();
    let issued = ring.issue("agent-a", &[], Duration::from_secs(60)).unwrap();
    let later = SystemTime::now() + Duration::from_secs(3600);
    let err = ring.verify(&issued.token, later).unwrap_err();
    assert!(!err.to_string().contains(&issued.claims.jti));
    assert!(!format!("{err:?}").contains("agent-a"));
}

#[test]
fn a_token_verified_once_still_expires_is_revoked_and_dies_with_its_key() {
    let (_t, ring) = ring();
    let now = SystemTime::now();
    let issued = ring.issue_at("a", &[], Duration::from_secs(60), now).unwrap();
    // The first verify remembers the signature check; later ones reuse it.
    assert!(ring.verify(&issued.token, now).is_ok());
    assert!(ring.verify(&issued.token, now).is_ok());
    assert_eq!(ring.verify(&issued.token, now + Duration::from_secs(95)), Err(TokenError::Expired));
    assert_eq!(ring.verify(&issued.token, now - Duration::from_secs(3600)), Err(TokenError::NotYetValid));
    // One altered byte is a different token: checked in full, refused.
    let mut forged = issued.token.clone().into_bytes();
    let last = forged.len() - 2;
    forged[last] = if forged[last] == b'A' { b'B' } else { b'A' };
    assert!(ring.verify(std::str::from_utf8(&forged).unwrap(), now).is_err());
    ring.revoke(&issued.claims.jti, issued.claims.exp).unwrap();
    assert_eq!(ring.verify(&issued.token, now), Err(TokenError::Revoked));

    // A key pruned from the ring takes its remembered tokens with it.
    let kept = ring.issue_at("b", &[], Duration::from_secs(60), now).unwrap();
    assert!(ring.verify(&kept.token, now).is_ok());
    ring.rotate().unwrap();
    ring.prune_at(Duration::from_secs(60), now + Duration::from_secs(3600)).unwrap();
    assert_eq!(ring.verify(&kept.token, now), Err(TokenError::UnknownKey));
}

#[test]
fn a_run_token_verifies_only_where_bound_to_its_run() {
    let (_t, ring) = ring();
    let now = SystemTime::now();
    let issued = ring.issue_for_run("agent-a", "run-1", &scope(), Duration::from_secs(600)).unwrap();
    assert_eq!(issued.claims.run.as_deref(), Some("run-1"));
    assert_eq!(part_json(&issued.token, 1)["run"], "run-1", "the run is a signed claim");
    assert_eq!(ring.verify_bound(&issued.token, Some("agent-a"), Some("run-1"), now).unwrap(), issued.claims);
    // Its run's verifier only: not another run's (same agent), not an
    // unbound one, not one bound to the agent alone.
    assert_eq!(ring.verify_bound(&issued.token, Some("agent-a"), Some("run-2"), now), Err(TokenError::WrongRun));
    assert_eq!(ring.verify(&issued.token, now), Err(TokenError::WrongRun));
    assert_eq!(ring.verify_for(&issued.token, "agent-a", now), Err(TokenError::WrongRun));
    assert_eq!(ring.verify_bound(&issued.token, Some("agent-b"), Some("run-1"), now), Err(TokenError::WrongAgent));
    // And a run's verifier takes no token that is not its run's.
    let plain = ring.issue("agent-a", &scope(), Duration::from_secs(600)).unwrap();
    assert_eq!(plain.claims.run, None);
    assert!(part_json(&plain.token, 1).get("run").is_none(), "an unbound token carries no run claim");
    assert_eq!(ring.verify_bound(&plain.token, Some("agent-a"), Some("run-1"), now), Err(TokenError::WrongRun));
    assert!(ring.verify(&plain.token, now).is_ok());
    // The run claim cannot be edited off: the signature covers it.
    let stripped = with_part(&issued.token, 1, &serde_json::to_string(&plain.claims).unwrap());
    assert_eq!(ring.verify(&stripped, now), Err(TokenError::BadSignature));
}
