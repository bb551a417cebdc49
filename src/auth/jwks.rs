//! An identity provider's published keys (a JWKS), and the key a token names.
//!
//! The algorithm a token is checked with comes from its key, never from the
//! token's header: an RSA key verifies RS256 (or PS256 when the key says
//! so), a P-256 key ES256 and an Ed25519 key EdDSA. A header that claims
//! anything else is refused before any signature is computed. Symmetric keys
//! and keys for encryption are left out of the set: a published key is
//! public, so a token "signed" with one proves nothing.

use jsonwebtoken::jwk::{
    AlgorithmParameters, EllipticCurve, Jwk, JwkSet, KeyAlgorithm, PublicKeyUse,
};
use jsonwebtoken::{Algorithm, DecodingKey};

pub mod refresh;
pub mod source;

pub use refresh::Jwks;
pub use source::{Config, Source};

/// One key a token may be signed with.
#[derive(Clone)]
pub struct PublicKey {
    pub kid: Option<String>,
    pub algorithm: Algorithm,
    pub key: DecodingKey,
}

/// The usable keys of a JWKS.
#[derive(Clone, Default)]
pub struct KeySet {
    keys: Vec<PublicKey>,
    /// The set as published, to tell a changed set from a refetched one.
    published: JwkSet,
}

/// Why no key was found for a token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Missing {
    /// No key has that `kid`; a refetch may bring it.
    Unknown(String),
    /// The token names no key and the set has several.
    KidRequired(usize),
    /// The set has no usable key.
    Empty,
}

impl KeySet {
    /// Reads a JWKS document. Keys that cannot verify a signature here are
    /// left out and named in the second value, for a warning; a document
    /// that is not a JWKS at all is an error.
    pub fn parse(json: &[u8]) -> Result<(KeySet, Vec<String>), String> {
        let published: JwkSet = serde_json::from_slice(json)
            .map_err(|e| format!("not a JWKS (a JSON object with \"keys\"): {e}"))?;
        let mut keys = Vec::new();
        let mut skipped = Vec::new();
        for jwk in &published.keys {
            let kid = jwk.common.key_id.clone();
            match usable(jwk) {
                Ok(key) => keys.push(key),
                Err(why) => {
                    skipped.push(format!("{}: {why}", kid.as_deref().unwrap_or("(no kid)")))
                }
            }
        }
        Ok((KeySet { keys, published }, skipped))
    }

    /// The key for a token that names `kid`, or names none. A token must
    /// name its key when there is more than one to choose from.
    pub fn find(&self, kid: Option<&str>) -> Result<&PublicKey, Missing> {
        match kid {
            Some(kid) => self
                .keys
                .iter()
                .find(|key| key.kid.as_deref() == Some(kid))
                .ok_or_else(|| Missing::Unknown(kid.to_owned())),
            None => match self.keys.as_slice() {
                [] => Err(Missing::Empty),
                [only] => Ok(only),
                many => Err(Missing::KidRequired(many.len())),
            },
        }
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Whether `other` publishes the same keys.
    pub fn same_as(&self, other: &KeySet) -> bool {
        self.published == other.published
    }

    /// The key ids, for the log.
    pub fn kids(&self) -> Vec<&str> {
        self.keys
            .iter()
            .map(|key| key.kid.as_deref().unwrap_or("(no kid)"))
            .collect()
    }
}

/// The key, with the one algorithm it verifies, or why it cannot be used.
fn usable(jwk: &Jwk) -> Result<PublicKey, String> {
    if jwk.common.public_key_use == Some(PublicKeyUse::Encryption) {
        return Err("an encryption key (use: enc)".into());
    }
    let declared = jwk.common.key_algorithm;
    let algorithm = match (&jwk.algorithm, declared) {
        (AlgorithmParameters::RSA(_), None | Some(KeyAlgorithm::RS256)) => Algorithm::RS256,
        (AlgorithmParameters::RSA(_), Some(KeyAlgorithm::PS256)) => Algorithm::PS256,
        (AlgorithmParameters::EllipticCurve(ec), None | Some(KeyAlgorithm::ES256))
            if ec.curve == EllipticCurve::P256 =>
        {
            Algorithm::ES256
        }
        (AlgorithmParameters::OctetKeyPair(okp), None | Some(KeyAlgorithm::EdDSA))
            if okp.curve == EllipticCurve::Ed25519 =>
        {
            Algorithm::EdDSA
        }
        (AlgorithmParameters::OctetKey(_), _) => {
            return Err("a symmetric key (kty: oct) is never taken from a published set".into());
        }
        (_, declared) => {
            return Err(format!(
                "not an RS256, PS256, ES256 (P-256) or EdDSA (Ed25519) key (alg {declared:?})"
            ));
        }
    };
    let key = DecodingKey::from_jwk(jwk).map_err(|e| format!("unreadable key: {e}"))?;
    Ok(PublicKey {
        kid: jwk.common.key_id.clone(),
        algorithm,
        key,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An RSA modulus and exponent, an EC point and an Ed25519 key from
    /// RFC 7517 and RFC 8037's examples.
    const SET: &str = r#"{"keys": [
        {"kty": "EC", "crv": "P-256", "kid": "ec",
         "x": "MKBCTNIcKUSDii11ySs3526iDZ8AiTo7Tu6KPAqv7D4",
         "y": "4Etl6SRW2YiLUrN5vfvVHuhp7x8PxltmWWlbbM4IFyM"},
        {"kty": "RSA", "kid": "rsa", "alg": "PS256", "use": "sig",
         "n": "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw",
         "e": "AQAB"},
        {"kty": "OKP", "crv": "Ed25519", "kid": "ed",
         "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"},
        {"kty": "oct", "kid": "hmac", "k": "c2VjcmV0"},
        {"kty": "RSA", "kid": "enc", "use": "enc", "n": "0vx7", "e": "AQAB"},
        {"kty": "EC", "crv": "P-384", "kid": "p384",
         "x": "MKBCTNIcKUSDii11ySs3526iDZ8AiTo7Tu6KPAqv7D4",
         "y": "4Etl6SRW2YiLUrN5vfvVHuhp7x8PxltmWWlbbM4IFyM"}
    ]}"#;

    #[test]
    fn each_key_gets_the_algorithm_its_type_and_curve_name() {
        let (set, skipped) = KeySet::parse(SET.as_bytes()).unwrap();
        let algorithm = |kid| set.find(Some(kid)).map(|key| key.algorithm);
        assert_eq!(algorithm("ec"), Ok(Algorithm::ES256));
        assert_eq!(algorithm("rsa"), Ok(Algorithm::PS256), "the key's own alg");
        assert_eq!(algorithm("ed"), Ok(Algorithm::EdDSA));
        assert_eq!(set.kids(), ["ec", "rsa", "ed"]);
        assert_eq!(skipped.len(), 3, "{skipped:?}");
        assert!(
            skipped[0].starts_with("hmac: a symmetric key"),
            "{skipped:?}"
        );
        assert!(
            skipped[1].starts_with("enc: an encryption key"),
            "{skipped:?}"
        );
        assert!(skipped[2].starts_with("p384: not an RS256"), "{skipped:?}");
    }

    #[test]
    fn a_token_must_name_its_key_among_several_and_unknown_ids_are_told_apart() {
        let (set, _) = KeySet::parse(SET.as_bytes()).unwrap();
        assert_eq!(set.find(None).err(), Some(Missing::KidRequired(3)));
        assert_eq!(
            set.find(Some("gone")).err(),
            Some(Missing::Unknown("gone".into()))
        );
        let one = r#"{"keys": [{"kty": "OKP", "crv": "Ed25519",
            "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}]}"#;
        let (set, _) = KeySet::parse(one.as_bytes()).unwrap();
        assert_eq!(
            set.find(None).map(|key| key.algorithm),
            Ok(Algorithm::EdDSA)
        );
        let (empty, _) = KeySet::parse(br#"{"keys": []}"#).unwrap();
        assert_eq!(empty.find(None).err(), Some(Missing::Empty));
        assert!(KeySet::parse(b"<html>").is_err());
    }
}
