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

use crate::clock;
use crate::domain::Role;
use crate::pb::Method;

mod cache;
mod caller;
mod rate;
pub mod secret;

pub use caller::{Caller, Cidr};
pub use rate::{RateLimit, RateLimiter};
pub use secret::Secret;

/// Clock skew tolerated on `exp` and `nbf`, between hosts whose clocks differ.
pub const LEEWAY: Duration = Duration::from_secs(30);

/// What a token says about its holder.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Claims {
    /// Who holds the token.
    pub sub: String,
    pub role: Role,
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
    /// Decides whether `claims` may call `method`.
    pub fn permits(self, method: &str, claims: &Claims) -> Result<(), AuthError> {
        match self {
            Access::Public | Access::Authenticated => Ok(()),
            Access::Roles(roles) if roles.contains(&claims.role) => Ok(()),
            Access::Roles(roles) => Err(AuthError::PermissionDenied {
                role: claims.role,
                method: method.to_owned(),
                needs: roles
                    .iter()
                    .map(|role| role.as_str())
                    .collect::<Vec<_>>()
                    .join(" or "),
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

/// Checks tokens. HS256 only: the algorithm is pinned, so a token cannot
/// choose how it is verified.
#[derive(Clone)]
pub struct Verifier {
    key: DecodingKey,
    validation: Validation,
    verified: Arc<cache::VerifiedTokens>,
}

impl Verifier {
    pub fn new(secret: &Secret, expect: &Expect) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = LEEWAY.as_secs();
        validation.validate_exp = true;
        validation.validate_nbf = true;
        // A configured claim must be present, not merely right when present.
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
        Self {
            key: DecodingKey::from_secret(secret.as_bytes()),
            validation,
            verified: Arc::new(cache::VerifiedTokens::new(
                VERIFIED_TOKENS,
                LEEWAY.as_secs(),
            )),
        }
    }

    /// The claims of a valid token, from the table of tokens already
    /// verified when it is there and has not expired.
    pub fn verify(&self, token: &str) -> Result<Arc<Claims>, AuthError> {
        let now = u64::try_from(clock::unix_seconds()).unwrap_or(0);
        if let Some(claims) = self.verified.get(token, now) {
            return Ok(claims);
        }
        let claims = Arc::new(self.verify_in_full(token)?);
        self.verified.insert(token, Arc::clone(&claims));
        Ok(claims)
    }

    /// The signature, the algorithm and every claim, checked by jsonwebtoken.
    fn verify_in_full(&self, token: &str) -> Result<Claims, AuthError> {
        use jsonwebtoken::errors::ErrorKind;
        jsonwebtoken::decode::<Claims>(token, &self.key, &self.validation)
            .map(|data| data.claims)
            .map_err(|error| {
                let reason = match error.kind() {
                    ErrorKind::ExpiredSignature => "expired".to_owned(),
                    ErrorKind::ImmatureSignature => "not valid yet (nbf)".to_owned(),
                    ErrorKind::InvalidSignature => "bad signature".to_owned(),
                    ErrorKind::InvalidAlgorithm => "algorithm must be HS256".to_owned(),
                    ErrorKind::InvalidIssuer => "wrong issuer".to_owned(),
                    ErrorKind::InvalidAudience => "wrong audience".to_owned(),
                    ErrorKind::MissingRequiredClaim(claim) => format!("missing claim {claim}"),
                    ErrorKind::Json(cause) => format!("malformed claims: {cause}"),
                    _ => "not a valid JWT".to_owned(),
                };
                AuthError::InvalidToken(reason)
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
        role,
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
        assert_eq!((claims.sub.as_str(), claims.role), ("alice", Role::Editor));
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
