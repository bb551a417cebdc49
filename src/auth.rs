//! Who may call what: JWT checking and minting, and the permission table.
//!
//! The check runs in a tower layer (`server::layers::auth`) in front of every
//! route, so unary and streaming RPCs alike pass through it before a handler
//! is called. Handlers find the [`Caller`], claims included, in the request
//! extensions. Nothing here knows gRPC statuses: `crate::error` gives an
//! [`AuthError`] its code.

use std::sync::Arc;
use std::time::Duration;

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde_json::{Map, Value};

use crate::clock;
use crate::domain::Role;
use crate::pb::Method;

mod cache;
mod caller;
pub mod jwks;
mod rate;
pub mod roles;
pub mod secret;

pub use caller::{Caller, Cidr};
pub use jwks::Jwks;
pub use rate::{RateLimit, RateLimiter};
pub use roles::RoleClaim;
pub use secret::Secret;

/// Clock skew tolerated on `exp` and `nbf`, between hosts whose clocks differ.
pub const LEEWAY: Duration = Duration::from_secs(30);

/// What a token says about its holder.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Claims {
    /// Who holds the token.
    pub sub: String,
    /// The role read from the configured claim; `None` when the token
    /// carries none of the names that mean one here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<Role>,
    /// Expiry, Unix seconds. Required: a token that never expires is refused.
    pub exp: u64,
    /// Issued at, Unix seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat: Option<u64>,
    /// Not before, Unix seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iss: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aud: Option<String>,
}

/// Why a call was refused before reaching its handler.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("missing authorization metadata: send 'authorization: Bearer <token>'")]
    MissingToken,
    #[error("malformed authorization metadata: expected 'Bearer <token>'")]
    Malformed,
    #[error("invalid token: {0}")]
    InvalidToken(String),
    /// An editor reaching for an admin: the least-privilege rule.
    #[error("role {role} may not {act}: an editor may create and change only viewers and editors")]
    AdminOnly { role: Role, act: &'static str },
    /// A long stream outlived the token it was opened with.
    #[error("token expired: reconnect with a fresh token and re-read")]
    Expired,
    #[error("role {role} may not call {method}; it needs {needs}")]
    PermissionDenied {
        role: Role,
        method: String,
        needs: String,
    },
    /// A valid token that carries no role, for a method that needs one.
    #[error(
        "the token carries no role in its claim {claim} (looked for {accepted}); {method} needs {needs}"
    )]
    NoRole {
        claim: String,
        accepted: String,
        method: String,
        needs: String,
    },
    /// The token names a key the identity provider's set does not have,
    /// even after a refetch when one was allowed.
    #[error("invalid token: unknown key id {kid:?} (not in the JWKS from {jwks})")]
    UnknownKey { kid: String, jwks: String },
    /// No key could be fetched yet: the caller should retry.
    #[error("no signing keys from {jwks} yet: {why}")]
    KeysUnavailable { jwks: String, why: String },
}

/// Who may call a method.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// Anyone, with or without a token.
    Public,
    /// Any valid token.
    Authenticated,
    /// A valid token with one of these roles.
    Roles(&'static [Role]),
}

/// The permission table: what each method of `UserService` needs. A match,
/// not a list, so that a method added to `pb::METHODS` does not compile
/// until it is given its access here.
pub fn access(method: Method) -> Access {
    const WRITERS: Access = Access::Roles(&[Role::Admin, Role::Editor]);
    match method {
        Method::GetUser => Access::Authenticated,
        Method::CreateUser => WRITERS,
        Method::ListUsers => Access::Authenticated,
        Method::BulkCreateUsers => WRITERS,
        Method::WatchUserEvents => Access::Authenticated,
        Method::UpdateUser => WRITERS,
        Method::DeleteUser => Access::Roles(&[Role::Admin]),
        Method::SubscribeUserEvents => Access::Authenticated,
        Method::SearchUsers => Access::Authenticated,
    }
}

/// The methods that are public unless configured otherwise, as in the
/// original contract.
pub const DEFAULT_PUBLIC_METHODS: &[Method] = &[Method::GetUser];

/// The permission table with the configured public methods.
#[derive(Clone, Debug)]
pub struct Policy {
    public: Vec<Method>,
}

impl Policy {
    /// The table, with `public` opened to anyone.
    pub fn new(public: Vec<Method>) -> Self {
        Self { public }
    }

    /// The table, with `public` (method names such as `GetUser`) opened to
    /// anyone. An unknown name is an error, so that a typo cannot silently
    /// leave a method closed, or an operator believe one is open.
    pub fn parse<S: AsRef<str>>(public: &[S]) -> Result<Self, String> {
        public
            .iter()
            .map(|name| {
                let name = name.as_ref();
                Method::from_name(name)
                    .ok_or_else(|| format!("unknown method {name:?} in public methods"))
            })
            .collect::<Result<_, _>>()
            .map(Self::new)
    }

    /// What `method` needs.
    pub fn lookup(&self, method: Method) -> Access {
        if self.public.contains(&method) {
            Access::Public
        } else {
            access(method)
        }
    }
}

impl Default for Policy {
    fn default() -> Self {
        Self::new(DEFAULT_PUBLIC_METHODS.to_vec())
    }
}

impl Access {
    /// Decides whether `claims` may call `method`. Every method that is not
    /// public needs a role, a viewer's at least: a token from an identity
    /// provider that grants none of ours opens nothing.
    pub fn permits(
        self,
        method: &str,
        claims: &Claims,
        role_claim: &RoleClaim,
    ) -> Result<(), AuthError> {
        let roles: &[Role] = match self {
            Access::Public => return Ok(()),
            Access::Authenticated => &Role::ALL,
            Access::Roles(roles) => roles,
        };
        let needs = || {
            let names: Vec<&str> = roles.iter().map(|role| role.as_str()).collect();
            names.join(" or ")
        };
        match claims.role {
            Some(role) if roles.contains(&role) => Ok(()),
            Some(role) => Err(AuthError::PermissionDenied {
                role,
                method: method.to_owned(),
                needs: needs(),
            }),
            None => Err(AuthError::NoRole {
                claim: role_claim.to_string(),
                accepted: role_claim.accepted(),
                method: method.to_owned(),
                needs: needs(),
            }),
        }
    }
}

/// Optional claims a server insists on.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Expect {
    pub issuer: Option<String>,
    pub audience: Option<String>,
}

/// Tokens remembered as verified, per verifier: enough for every client of
/// a busy server, and at most a few MiB.
const VERIFIED_TOKENS: usize = 10_000;

/// The algorithms a published key may verify (see `jwks`).
const PUBLIC_KEY_ALGORITHMS: &[&str] = &["RS256", "PS256", "ES256", "EdDSA"];

/// Checks tokens: HS256 with the server's secret, and tokens signed by an
/// identity provider's published keys when a JWKS is configured. The key
/// decides the algorithm, so a token cannot choose how it is verified.
#[derive(Clone)]
pub struct Verifier {
    inner: Arc<Keys>,
}

struct Keys {
    /// The HS256 secret; `None` when HS256 is refused (a JWKS without
    /// `--jwt-secret-file`).
    hmac: Option<DecodingKey>,
    jwks: Option<Arc<Jwks>>,
    expect: Expect,
    roles: RoleClaim,
    verified: cache::VerifiedTokens,
}

/// The part of a token's header that picks its key.
#[derive(serde::Deserialize)]
struct TokenHeader {
    alg: String,
    #[serde(default)]
    kid: Option<String>,
}

impl Verifier {
    /// HS256 with `secret`, roles from the `role` claim: the embedded default.
    pub fn new(secret: &Secret, expect: &Expect) -> Self {
        Self::with_keys(Some(secret), None, expect, RoleClaim::default())
    }

    /// A verifier taking HS256 tokens when `secret` is given, and tokens
    /// signed by `jwks`'s keys when it is.
    pub fn with_keys(
        secret: Option<&Secret>,
        jwks: Option<Arc<Jwks>>,
        expect: &Expect,
        roles: RoleClaim,
    ) -> Self {
        Self {
            inner: Arc::new(Keys {
                hmac: secret.map(|secret| DecodingKey::from_secret(secret.as_bytes())),
                jwks,
                expect: expect.clone(),
                roles,
                verified: cache::VerifiedTokens::new(VERIFIED_TOKENS, LEEWAY.as_secs()),
            }),
        }
    }

    /// Where roles are read from, for refusals' messages.
    pub fn role_claim(&self) -> &RoleClaim {
        &self.inner.roles
    }

    /// The claims of a valid token, from the table of tokens already
    /// verified when it is there and has not expired.
    pub fn verify(&self, token: &str) -> Result<Arc<Claims>, AuthError> {
        let keys = &*self.inner;
        // A token verified with an older key set is checked again: the change
        // may have withdrawn its key. The generation is read before the keys,
        // so a token checked against a set that changed meanwhile is kept
        // under the older generation, and checked again too.
        let generation = keys.jwks.as_ref().map_or(0, |jwks| jwks.generation());
        let now = u64::try_from(clock::unix_seconds()).unwrap_or(0);
        if let Some(claims) = keys.verified.get(token, now, generation) {
            return Ok(claims);
        }
        let claims = Arc::new(self.verify_in_full(token)?);
        keys.verified.insert(token, Arc::clone(&claims), generation);
        Ok(claims)
    }

    /// When `refusal` is a key the set lacks (or a set with no keys yet): a
    /// wait for the set to be fetched again, if the refetch interval allows
    /// one now.
    pub fn refetch(
        &self,
        refusal: &AuthError,
    ) -> Option<impl std::future::Future<Output = ()> + Send + 'static> {
        match (refusal, &self.inner.jwks) {
            (AuthError::UnknownKey { .. } | AuthError::KeysUnavailable { .. }, Some(jwks)) => {
                jwks.refetch()
            }
            _ => None,
        }
    }

    /// The key the token's header names, and the one algorithm it allows.
    fn key_for(&self, token: &str) -> Result<(DecodingKey, Algorithm), AuthError> {
        let keys = &*self.inner;
        let header = token_header(token)?;
        match header.alg.as_str() {
            "HS256" => match &keys.hmac {
                Some(key) => Ok((key.clone(), Algorithm::HS256)),
                None => Err(AuthError::InvalidToken(
                    "algorithm HS256 is not accepted: tokens must be signed with a key of the \
                     identity provider's JWKS"
                        .into(),
                )),
            },
            alg if PUBLIC_KEY_ALGORITHMS.contains(&alg) && keys.jwks.is_some() => {
                let jwks = keys.jwks.as_ref().expect("matched above");
                let set = jwks.keys();
                if set.is_empty() {
                    return Err(AuthError::KeysUnavailable {
                        jwks: jwks.describe().to_owned(),
                        why: jwks
                            .last_error()
                            .unwrap_or_else(|| "it has no usable key".into()),
                    });
                }
                let key = set
                    .find(header.kid.as_deref())
                    .map_err(|missing| match missing {
                        jwks::Missing::Unknown(kid) => AuthError::UnknownKey {
                            kid,
                            jwks: jwks.describe().to_owned(),
                        },
                        jwks::Missing::KidRequired(count) => AuthError::InvalidToken(format!(
                            "the token names no key (kid) and the key set has {count}"
                        )),
                        jwks::Missing::Empty => AuthError::KeysUnavailable {
                            jwks: jwks.describe().to_owned(),
                            why: jwks
                                .last_error()
                                .unwrap_or_else(|| "it has no usable key".into()),
                        },
                    })?;
                let expected = format!("{:?}", key.algorithm);
                if expected != alg {
                    return Err(AuthError::InvalidToken(format!(
                        "the token says {alg}, but its key {} is for {expected}",
                        key.kid.as_deref().unwrap_or("(no kid)")
                    )));
                }
                Ok((key.key.clone(), key.algorithm))
            }
            alg => Err(AuthError::InvalidToken(match (&keys.hmac, &keys.jwks) {
                (Some(_), None) => "algorithm must be HS256".to_owned(),
                (None, _) => format!(
                    "algorithm {alg:?} is not accepted: RS256, PS256, ES256 or EdDSA, as the key says"
                ),
                (Some(_), Some(_)) => format!(
                    "algorithm {alg:?} is not accepted: HS256, RS256, PS256, ES256 or EdDSA"
                ),
            })),
        }
    }

    /// The checks for `algorithm`: expiry, not-before, and the configured
    /// issuer and audience, which must then be present.
    fn validation(&self, algorithm: Algorithm) -> Validation {
        let expect = &self.inner.expect;
        let mut validation = Validation::new(algorithm);
        validation.leeway = LEEWAY.as_secs();
        validation.validate_exp = true;
        validation.validate_nbf = true;
        let mut required = vec!["exp", "sub"];
        if let Some(issuer) = &expect.issuer {
            validation.set_issuer(&[issuer]);
            required.push("iss");
        }
        match &expect.audience {
            Some(audience) => {
                validation.set_audience(&[audience]);
                required.push("aud");
            }
            None => validation.validate_aud = false,
        }
        validation.set_required_spec_claims(&required);
        validation
    }

    /// The signature, the algorithm and every claim, checked by jsonwebtoken.
    fn verify_in_full(&self, token: &str) -> Result<Claims, AuthError> {
        use jsonwebtoken::errors::ErrorKind;
        let (key, algorithm) = self.key_for(token)?;
        let payload =
            jsonwebtoken::decode::<Map<String, Value>>(token, &key, &self.validation(algorithm))
                .map(|data| data.claims)
                .map_err(|error| {
                    let reason = match error.kind() {
                        ErrorKind::ExpiredSignature => "expired".to_owned(),
                        ErrorKind::ImmatureSignature => "not valid yet (nbf)".to_owned(),
                        ErrorKind::InvalidSignature => "bad signature".to_owned(),
                        ErrorKind::InvalidAlgorithm => format!("algorithm must be {algorithm:?}"),
                        ErrorKind::InvalidIssuer => "wrong issuer".to_owned(),
                        ErrorKind::InvalidAudience => "wrong audience".to_owned(),
                        ErrorKind::MissingRequiredClaim(claim) => format!("missing claim {claim}"),
                        ErrorKind::Json(cause) => format!("malformed claims: {cause}"),
                        _ => "not a valid JWT".to_owned(),
                    };
                    AuthError::InvalidToken(reason)
                })?;
        Claims::from_payload(&payload, &self.inner.roles)
    }
}

/// The token's header, read to pick a key; nothing in it is trusted beyond
/// that.
fn token_header(token: &str) -> Result<TokenHeader, AuthError> {
    use base64::Engine;
    let malformed = || AuthError::InvalidToken("not a valid JWT".into());
    let (header, _) = token.split_once('.').ok_or_else(malformed)?;
    let json = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(header)
        .map_err(|_| malformed())?;
    serde_json::from_slice(&json).map_err(|_| malformed())
}

impl Claims {
    /// What a verified payload says: its subject, expiry and role.
    fn from_payload(payload: &Map<String, Value>, roles: &RoleClaim) -> Result<Self, AuthError> {
        let text = |name: &str| payload.get(name).and_then(Value::as_str).map(str::to_owned);
        let number = |name: &str| payload.get(name).and_then(Value::as_u64);
        let malformed = |claim: &str, what: &str| {
            AuthError::InvalidToken(format!("malformed claims: {claim} must be {what}"))
        };
        Ok(Claims {
            sub: text("sub").ok_or_else(|| malformed("sub", "a string"))?,
            role: roles.role(payload),
            exp: number("exp").ok_or_else(|| malformed("exp", "a number of seconds"))?,
            iat: number("iat"),
            nbf: number("nbf"),
            iss: text("iss"),
            aud: text("aud"),
        })
    }
}

/// Mints tokens signed with the server's secret.
pub fn mint(
    secret: &Secret,
    sub: &str,
    role: Role,
    ttl: Duration,
    expect: &Expect,
) -> Result<String, jsonwebtoken::errors::Error> {
    let now = u64::try_from(clock::unix_seconds()).unwrap_or(0);
    let claims = Claims {
        sub: sub.to_owned(),
        role: Some(role),
        exp: now.saturating_add(ttl.as_secs()),
        iat: Some(now),
        nbf: Some(now),
        iss: expect.issuer.clone(),
        aud: expect.audience.clone(),
    };
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret() -> Secret {
        Secret::from_bytes(b"0123456789abcdef0123456789abcdef".to_vec())
    }

    #[test]
    fn a_minted_token_verifies_and_carries_its_claims() {
        let token = mint(
            &secret(),
            "alice",
            Role::Editor,
            Duration::from_secs(60),
            &Expect::default(),
        )
        .unwrap();
        let claims = Verifier::new(&secret(), &Expect::default())
            .verify(&token)
            .unwrap();
        assert_eq!(
            (claims.sub.as_str(), claims.role),
            ("alice", Some(Role::Editor))
        );
    }

    #[test]
    fn a_verified_token_is_remembered_but_an_altered_copy_is_not() {
        let token = mint(
            &secret(),
            "alice",
            Role::Admin,
            Duration::from_secs(60),
            &Expect::default(),
        )
        .unwrap();
        let verifier = Verifier::new(&secret(), &Expect::default());
        let first = verifier.verify(&token).unwrap();
        let again = verifier.verify(&token).unwrap();
        assert!(Arc::ptr_eq(&first, &again), "the second check is a hit");
        // Same header and payload, another signature: checked in full.
        let (signed, signature) = token.rsplit_once('.').unwrap();
        let flipped = if signature.starts_with('A') { 'B' } else { 'A' };
        let forged = format!("{signed}.{flipped}{}", &signature[1..]);
        let err = verifier.verify(&forged).unwrap_err();
        assert!(err.to_string().contains("bad signature"), "{err}");
        // A verifier with another secret shares nothing with this one.
        let other = Secret::from_bytes(b"another-secret-another-secret-00".to_vec());
        let err = Verifier::new(&other, &Expect::default())
            .verify(&token)
            .unwrap_err();
        assert!(err.to_string().contains("bad signature"), "{err}");
    }

    #[test]
    fn issuer_and_audience_are_checked_when_configured() {
        let expect = Expect {
            issuer: Some("usersvc".into()),
            audience: Some("directory".into()),
        };
        let token = mint(
            &secret(),
            "a",
            Role::Viewer,
            Duration::from_secs(60),
            &Expect::default(),
        )
        .unwrap();
        let err = Verifier::new(&secret(), &expect)
            .verify(&token)
            .unwrap_err();
        assert!(err.to_string().contains("missing claim"), "{err}");
        let other = Expect {
            issuer: Some("someone-else".into()),
            ..expect.clone()
        };
        let token = mint(
            &secret(),
            "a",
            Role::Viewer,
            Duration::from_secs(60),
            &other,
        )
        .unwrap();
        let err = Verifier::new(&secret(), &expect)
            .verify(&token)
            .unwrap_err();
        assert!(err.to_string().contains("wrong issuer"), "{err}");
        let token = mint(
            &secret(),
            "a",
            Role::Viewer,
            Duration::from_secs(60),
            &expect,
        )
        .unwrap();
        assert!(Verifier::new(&secret(), &expect).verify(&token).is_ok());
    }

    #[test]
    fn unknown_public_method_is_refused() {
        assert!(Policy::parse(&["GetUsers"]).is_err());
        let policy = Policy::parse(&["ListUsers"]).unwrap();
        assert_eq!(policy.lookup(Method::ListUsers), Access::Public);
        assert_eq!(policy.lookup(Method::GetUser), Access::Authenticated);
    }
}
