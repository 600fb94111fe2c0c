//! Agent tokens: compact JWS (RFC 7515) with `alg` EdDSA (RFC 8037).
//!
//! Guarantees of `verify`: the header names EdDSA (never "none", never an
//! HMAC the attacker could key with our public key), the `kid` is a key of
//! this ring, the Ed25519 signature is valid under `verify_strict`, the
//! claims are clawkeep's, the token is within its lifetime (± `LEEWAY`)
//! and its `jti` is not revoked. Checks run in that order, so a forged
//! token's claims are never even parsed.
//!
//! A token issued for one run (`issue_for_run`) carries that run's id and
//! verifies only where the verifier is bound to the same run
//! (`verify_bound`): the run's own proxy, which ends with it. Everywhere
//! else it is refused, so it needs no revocation when the run ends.

use crate::keys::{kid_of, unix_secs};
use crate::{random, IdentityError, KeyRing, TokenError};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use ed25519_dalek::Signature;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::sync::PoisonError;
use std::time::{Duration, SystemTime};

/// The `iss` of every token clawkeep issues.
pub const ISSUER: &str = "clawkeep";
/// Clock skew tolerated on `exp` and `iat`.
pub const LEEWAY: Duration = Duration::from_secs(30);
/// Longer inputs are refused before any decoding, so a huge header costs
/// nothing; real tokens are a few hundred bytes.
const MAX_TOKEN_LEN: usize = 8 * 1024;
const ALG: &str = "EdDSA";
/// Verified tokens remembered at most; the cache starts over when full.
const VERIFIED_CACHE: usize = 4096;

/// The claims of an agent token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    pub iss: String,
    /// The agent id.
    pub sub: String,
    /// Issued at, seconds since the epoch.
    pub iat: u64,
    /// Expires at, seconds since the epoch.
    pub exp: u64,
    /// 128 random bits in hex; what `revoke` names.
    pub jti: String,
    pub scope: Vec<String>,
    /// The run the token was issued for: it is valid at that run's proxy
    /// and nowhere else. Absent for a token not bound to a run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run: Option<String>,
}

/// A freshly issued token. `Debug` hides the token: it is a bearer credential.
#[derive(Clone)]
pub struct IssuedToken {
    /// The compact JWS to hand to the agent.
    pub token: String,
    pub claims: Claims,
    /// The key that signed it.
    pub kid: String,
}

impl fmt::Debug for IssuedToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IssuedToken").field("token", &"***").field("claims", &self.claims).field("kid", &self.kid).finish()
    }
}

#[derive(Serialize)]
struct HeaderOut<'a> {
    alg: &'a str,
    typ: &'a str,
    kid: &'a str,
}

#[derive(Deserialize)]
struct HeaderIn {
    alg: String,
    kid: Option<String>,
    /// Extensions we would have to understand (RFC 7515 §4.1.11); we know none.
    crit: Option<serde_json::Value>,
}

impl KeyRing {
    /// Issues a token for `agent` valid for `ttl` from now.
    pub fn issue(&self, agent: &str, scope: &[String], ttl: Duration) -> Result<IssuedToken, IdentityError> {
        self.issue_at(agent, scope, ttl, SystemTime::now())
    }

    /// Issues a token for `agent` that only a verifier bound to `run`
    /// accepts (see the module docs).
    pub fn issue_for_run(&self, agent: &str, run: &str, scope: &[String], ttl: Duration) -> Result<IssuedToken, IdentityError> {
        self.issue_claims(agent, Some(run), scope, ttl, SystemTime::now())
    }

    /// `issue` as of `now`.
    pub fn issue_at(&self, agent: &str, scope: &[String], ttl: Duration, now: SystemTime) -> Result<IssuedToken, IdentityError> {
        self.issue_claims(agent, None, scope, ttl, now)
    }

    fn issue_claims(
        &self,
        agent: &str,
        run: Option<&str>,
        scope: &[String],
        ttl: Duration,
        now: SystemTime,
    ) -> Result<IssuedToken, IdentityError> {
        if agent.is_empty() {
            return Err(IdentityError::EmptyAgent);
        }
        let iat = unix_secs(now);
        let claims = Claims {
            iss: ISSUER.to_string(),
            sub: agent.to_string(),
            iat,
            exp: iat.saturating_add(ttl.as_secs()),
            jti: hex::encode(*random::bytes::<16>()?),
            scope: scope.to_vec(),
            run: run.map(str::to_string),
        };
        let payload = serde_json::to_vec(&claims).map_err(IdentityError::Encode)?;
        let payload = URL_SAFE_NO_PAD.encode(payload);
        // The kid goes into the signed header under the same lock that picks
        // the signing key, so a concurrent rotate cannot split the two.
        let (kid, signing_input, sig) = self.sign_with(|kid| {
            let header = HeaderOut { alg: ALG, typ: "JWT", kid };
            let header = serde_json::to_vec(&header).map_err(IdentityError::Encode)?;
            Ok(format!("{}.{payload}", URL_SAFE_NO_PAD.encode(header)))
        })?;
        let token = format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(sig.to_bytes()));
        Ok(IssuedToken { token, claims, kid })
    }

    /// Verifies `token` as of `now`; see the module docs for the checks.
    /// A token bound to a run is refused here (see `verify_bound`).
    pub fn verify(&self, token: &str, now: SystemTime) -> Result<Claims, TokenError> {
        self.verify_bound(token, None, None, now)
    }

    /// `verify`, and the token must have been issued to `expected_agent`.
    pub fn verify_for(&self, token: &str, expected_agent: &str, now: SystemTime) -> Result<Claims, TokenError> {
        self.verify_bound(token, Some(expected_agent), None, now)
    }

    /// `verify` for a verifier bound to `agent` (when given) and to `run`:
    /// the token's run must be `run` exactly, so a run's token passes only
    /// its own run's verifier, and a verifier bound to a run passes only
    /// that run's tokens.
    pub fn verify_bound(&self, token: &str, agent: Option<&str>, run: Option<&str>, now: SystemTime) -> Result<Claims, TokenError> {
        let claims = self.verify_signed(token, now)?;
        if agent.is_some_and(|a| claims.sub != a) {
            return Err(TokenError::WrongAgent);
        }
        if claims.run.as_deref() != run {
            return Err(TokenError::WrongRun);
        }
        Ok(claims)
    }

    /// Signature, claims, lifetime and revocation; no binding.
    fn verify_signed(&self, token: &str, now: SystemTime) -> Result<Claims, TokenError> {
        if token.len() > MAX_TOKEN_LEN {
            return Err(TokenError::Malformed);
        }
        // A token whose signature verified before skips the signature (the
        // bulk of the cost) as long as its key is still in the ring; its
        // lifetime and revocation are checked every time.
        let cached = self.verified.lock().unwrap_or_else(PoisonError::into_inner).get(token).cloned();
        if let Some((claims, kid)) = cached {
            if self.has_key(&kid) {
                return self.check_claims(claims, now);
            }
        }
        let mut parts = token.split('.');
        let (Some(header), Some(payload), Some(sig), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
            return Err(TokenError::Malformed);
        };
        let header_in: HeaderIn = decode_json(header)?;
        if header_in.alg != ALG {
            return Err(TokenError::UnsupportedAlg);
        }
        if header_in.crit.is_some() {
            return Err(TokenError::Malformed);
        }
        let key = header_in.kid.and_then(|kid| self.verifying_key(&kid)).ok_or(TokenError::UnknownKey)?;
        let sig = decode(sig)?;
        let sig: &[u8; 64] = sig.as_slice().try_into().map_err(|_| TokenError::Malformed)?;
        let signing_input = &token[..header.len() + 1 + payload.len()];
        key.verify_strict(signing_input.as_bytes(), &Signature::from_bytes(sig)).map_err(|_| TokenError::BadSignature)?;

        let claims: Claims = decode_json(payload)?;
        if claims.iss != ISSUER {
            return Err(TokenError::Malformed);
        }
        let claims = self.check_claims(claims, now)?;
        let mut cache = self.verified.lock().unwrap_or_else(PoisonError::into_inner);
        if cache.len() >= VERIFIED_CACHE {
            cache.clear();
        }
        cache.insert(token.to_string(), (claims.clone(), kid_of(&key)));
        Ok(claims)
    }

    /// The checks that depend on the time and the revocation list.
    fn check_claims(&self, claims: Claims, now: SystemTime) -> Result<Claims, TokenError> {
        let now = unix_secs(now);
        let leeway = LEEWAY.as_secs();
        if now >= claims.exp.saturating_add(leeway) {
            return Err(TokenError::Expired);
        }
        if claims.iat > now.saturating_add(leeway) {
            return Err(TokenError::NotYetValid);
        }
        if self.is_revoked(&claims.jti) {
            return Err(TokenError::Revoked);
        }
        Ok(claims)
    }
}

fn decode(part: &str) -> Result<Vec<u8>, TokenError> {
    URL_SAFE_NO_PAD.decode(part).map_err(|_| TokenError::Malformed)
}

fn decode_json<T: DeserializeOwned>(part: &str) -> Result<T, TokenError> {
    serde_json::from_slice(&decode(part)?).map_err(|_| TokenError::Malformed)
}
