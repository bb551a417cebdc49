//! Tokens already verified, so that a client sending the same token on every
//! call pays for the HMAC, the base64 and the JSON once rather than per call
//! (a quarter of GetUser's cost before this cache).
//!
//! Only a token that passed every check is kept, keyed by its whole text, so
//! a hit is exactly a token whose signature this server has checked: a forged
//! or altered token differs in its text and is verified in full. A hit still
//! checks `exp` against the clock, because that is the one check whose answer
//! changes with time (`nbf`, once passed, stays passed). The table is bounded,
//! and only valid tokens, which only the secret's holders can mint, enter it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::Claims;

/// A verified token's claims, and the generation of the key set it was
/// verified with.
type Verified = (Arc<Claims>, u64);

/// Verified tokens and their claims.
pub struct VerifiedTokens {
    entries: Mutex<HashMap<Box<str>, Verified>>,
    capacity: usize,
    leeway: u64,
}

impl VerifiedTokens {
    /// A table of at most `capacity` tokens, honouring `leeway` seconds of
    /// clock skew on `exp` as the full check does.
    pub fn new(capacity: usize, leeway: u64) -> Self {
        Self {
            entries: Mutex::new(HashMap::new()),
            capacity,
            leeway,
        }
    }

    /// The claims of `token` if it was verified with the key set of
    /// `generation` and has not expired by `now` (Unix seconds). An expired
    /// token, or one verified with other keys, is forgotten.
    pub fn get(&self, token: &str, now: u64, generation: u64) -> Option<Arc<Claims>> {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        let (claims, verified_with) = entries.get(token)?;
        if claims.exp.saturating_add(self.leeway) < now || *verified_with != generation {
            entries.remove(token);
            return None;
        }
        Some(Arc::clone(claims))
    }

    /// Remembers a token that passed every check. A full table is emptied
    /// first: simpler than tracking use, and a refill costs one full check
    /// per live token.
    pub fn insert(&self, token: &str, claims: Arc<Claims>, generation: u64) {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if entries.len() >= self.capacity {
            entries.clear();
        }
        entries.insert(token.into(), (claims, generation));
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.entries.lock().unwrap().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Role;

    fn claims(exp: u64) -> Arc<Claims> {
        Arc::new(Claims {
            sub: "alice".into(),
            role: Some(Role::Viewer),
            exp,
            iat: None,
            nbf: None,
            iss: None,
            aud: None,
        })
    }

    #[test]
    fn a_hit_honours_expiry_with_the_leeway_and_then_forgets() {
        let tokens = VerifiedTokens::new(10, 30);
        tokens.insert("t", claims(100), 0);
        assert_eq!(tokens.get("t", 100, 0).unwrap().sub, "alice");
        assert!(tokens.get("t", 130, 0).is_some(), "within the leeway");
        assert!(tokens.get("t", 131, 0).is_none(), "expired past the leeway");
        assert_eq!(tokens.len(), 0, "an expired token is forgotten");
        assert!(tokens.get("t", 100, 0).is_none());
        // Verified with a key set since replaced: checked again.
        tokens.insert("t", claims(200), 1);
        assert!(tokens.get("t", 100, 2).is_none());
        assert!(tokens.get("t", 100, 1).is_none(), "and forgotten");
    }

    #[test]
    fn only_the_exact_token_text_hits() {
        let tokens = VerifiedTokens::new(10, 30);
        tokens.insert("header.payload.signature", claims(100), 0);
        assert!(tokens.get("header.payload.signaturf", 0, 0).is_none());
        assert!(tokens.get("header.payload.signatur", 0, 0).is_none());
        assert!(tokens.get("header.payload.signature", 0, 0).is_some());
    }

    #[test]
    fn the_table_never_grows_past_its_capacity() {
        let tokens = VerifiedTokens::new(3, 30);
        for i in 0..10 {
            tokens.insert(&format!("token-{i}"), claims(100), 0);
            assert!(tokens.len() <= 3);
        }
        assert!(tokens.get("token-9", 0, 0).is_some(), "the newest is kept");
    }
}
