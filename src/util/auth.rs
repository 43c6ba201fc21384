//! `auth: {bearer: TOKEN}`: requests must carry `Authorization: Bearer TOKEN`.
//!
//! Also used by the agent's API for `POST /reload`. The token is a secret:
//! it is never logged nor shown by `Debug`, and it is compared in constant
//! time so that the answer's timing does not tell how much of a guess was
//! right.

use std::fmt;

use hyper::header::{AUTHORIZATION, HeaderMap};
use serde::Deserialize;
use sha2::{Digest as _, Sha256};

/// `auth:` on `ingest` and on `api`.
#[derive(Clone, PartialEq, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Auth {
    /// Requests must send `Authorization: Bearer <token>`; write the token
    /// as `${NAME}` to keep it out of the file. No default.
    Bearer(String),
}

impl fmt::Debug for Auth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Auth::Bearer(_) => f.write_str("Bearer([redacted])"),
        }
    }
}

impl Auth {
    /// Checks the token once, at build time.
    pub fn verifier(&self) -> Result<Verifier, String> {
        let Auth::Bearer(token) = self;
        if token.is_empty() {
            return Err("`auth.bearer` is empty: give it a token (an unset `${NAME}` is empty)".to_string());
        }
        // RFC 6750's token68 characters; anything else could not be sent in a header.
        let allowed = |c: char| c.is_ascii_alphanumeric() || "-._~+/=".contains(c);
        if !token.chars().all(allowed) {
            return Err("`auth.bearer` may hold letters, digits and `-._~+/=` only".to_string());
        }
        Ok(Verifier { digest: Sha256::digest(token.as_bytes()).into() })
    }
}

/// Tells whether a request carries the token.
#[derive(Clone)]
pub struct Verifier {
    /// Only a digest is kept: comparing digests takes the same time whatever
    /// the length of the guess.
    digest: [u8; 32],
}

impl Verifier {
    pub fn allows(&self, headers: &HeaderMap) -> bool {
        let Some(value) = headers.get(AUTHORIZATION).and_then(|v| v.to_str().ok()) else {
            return false;
        };
        // The scheme is case-insensitive (RFC 7235 §2.1).
        let Some((scheme, token)) = value.trim().split_once(' ') else { return false };
        if !scheme.eq_ignore_ascii_case("bearer") {
            return false;
        }
        let guess: [u8; 32] = Sha256::digest(token.trim_start().as_bytes()).into();
        let diff = guess.iter().zip(&self.digest).fold(0u8, |acc, (a, b)| acc | (a ^ b));
        // Keep the compiler from turning the fold into an early exit.
        std::hint::black_box(diff) == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::header::HeaderValue;

    fn headers(value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(AUTHORIZATION, HeaderValue::from_str(value).unwrap());
        h
    }

    #[test]
    fn takes_only_the_token() {
        let v = Auth::Bearer("s3cr3t-T0ken".into()).verifier().unwrap();
        assert!(v.allows(&headers("Bearer s3cr3t-T0ken")));
        assert!(v.allows(&headers("bearer s3cr3t-T0ken")));
        assert!(!v.allows(&headers("Bearer s3cr3t-T0ke")));
        assert!(!v.allows(&headers("Bearer s3cr3t-T0kenX")));
        assert!(!v.allows(&headers("Basic s3cr3t-T0ken")));
        assert!(!v.allows(&headers("Bearer")));
        assert!(!v.allows(&HeaderMap::new()));
    }

    #[test]
    fn refuses_unusable_tokens_and_hides_them() {
        assert!(Auth::Bearer(String::new()).verifier().is_err());
        assert!(Auth::Bearer("a b".into()).verifier().is_err());
        assert!(!format!("{:?}", Auth::Bearer("s3cr3t".into())).contains("s3cr3t"));
    }
}
