//! The JSON Web Key Set (RFC 7517) of a key ring, with Ed25519 keys as OKP
//! keys (RFC 8037 §2): what a verifier outside the daemon needs, and only
//! public halves.

use crate::KeyRing;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde_json::{json, Value};

impl KeyRing {
    /// `{"keys":[{"kty":"OKP","crv":"Ed25519","x":…,"kid":…,"use":"sig","alg":"EdDSA"}…]}`
    /// for every key that still verifies, sorted by kid.
    pub fn jwks(&self) -> Value {
        let keys: Vec<Value> = self
            .public_keys()
            .into_iter()
            .map(|(kid, key)| {
                json!({
                    "kty": "OKP",
                    "crv": "Ed25519",
                    "x": URL_SAFE_NO_PAD.encode(key.as_bytes()),
                    "kid": kid,
                    "use": "sig",
                    "alg": "EdDSA",
                })
            })
            .collect();
        json!({ "keys": keys })
    }
}
