#![allow(clippy::unwrap_used, clippy::expect_used)]

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use clawkeep_identity::KeyRing;
use ed25519_dalek::{Signature, VerifyingKey};
use std::time::Duration;

#[test]
fn jwks_lists_every_key_and_verifies_tokens() {
    let t = tempfile::tempdir().unwrap();
    let ring = KeyRing::open(t.path()).unwrap();
    let old = ring.issue("a", &[], Duration::from_secs(60)).unwrap();
    ring.rotate().unwrap();
    let new = ring.issue("a", &[], Duration::from_secs(60)).unwrap();

    let jwks = ring.jwks();
    let keys = jwks["keys"].as_array().unwrap();
    let mut kids: Vec<&str> = keys.iter().map(|k| k["kid"].as_str().unwrap()).collect();
    kids.sort_unstable();
    assert_eq!(kids, ring.kids().iter().map(String::as_str).collect::<Vec<_>>());

    for issued in [&old, &new] {
        let jwk = keys.iter().find(|k| k["kid"] == issued.kid.as_str()).unwrap();
        for (field, want) in [("kty", "OKP"), ("crv", "Ed25519"), ("use", "sig"), ("alg", "EdDSA")] {
            assert_eq!(jwk[field], want);
        }
        assert_eq!(jwk.as_object().unwrap().len(), 6, "public fields only: {jwk}");
        let x = URL_SAFE_NO_PAD.decode(jwk["x"].as_str().unwrap()).unwrap();
        let x: [u8; 32] = x.try_into().expect("x is 32 bytes");
        let key = VerifyingKey::from_bytes(&x).unwrap();
        let (input, sig) = issued.token.rsplit_once('.').unwrap();
        let sig: [u8; 64] = URL_SAFE_NO_PAD.decode(sig).unwrap().try_into().unwrap();
        key.verify_strict(input.as_bytes(), &Signature::from_bytes(&sig)).expect("JWKS key verifies the token");
    }

    ring.prune_at(Duration::ZERO, std::time::SystemTime::now() + Duration::from_secs(3600)).unwrap();
    assert_eq!(ring.jwks()["keys"].as_array().unwrap().len(), 1);
}
