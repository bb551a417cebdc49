//! `usersvc token`: mints a token with the same secret `serve` uses.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use super::Failure;
use crate::auth::{self, Expect, Secret, secret::Source};
use crate::domain::Role;

/// Where the signing secret comes from; shared by `serve` and `token`.
#[derive(Debug, Args)]
pub struct SecretArgs {
    /// File holding the JWT secret (HS256, at least 32 bytes).
    #[arg(long, env = "USERSVC_JWT_SECRET_FILE")]
    jwt_secret_file: Option<PathBuf>,
    /// The JWT secret itself; only from the environment, never a flag, so it
    /// stays out of `ps` and shell history.
    #[arg(skip = std::env::var("USERSVC_JWT_SECRET").ok())]
    jwt_secret: Option<String>,
    /// Directory for the generated secret when neither of the above is set.
    #[arg(long, env = "USERSVC_DATA_DIR", default_value_os_t = super::serve::default_data_dir())]
    data_dir: PathBuf,
    /// Issuer that tokens carry and the server requires (`iss`).
    #[arg(long, env = "USERSVC_JWT_ISSUER")]
    jwt_issuer: Option<String>,
    /// Audience that tokens carry and the server requires (`aud`).
    #[arg(long, env = "USERSVC_JWT_AUDIENCE")]
    jwt_audience: Option<String>,
}

impl SecretArgs {
    pub fn resolve(&self) -> Result<(Secret, Source), Failure> {
        Secret::resolve(
            self.jwt_secret_file.as_deref(),
            self.jwt_secret.as_deref(),
            &self.data_dir,
        )
        .map_err(|e| Failure::Usage(format!("cannot load the JWT secret: {e}")))
    }

    pub fn expect(&self) -> Expect {
        Expect {
            issuer: self.jwt_issuer.clone(),
            audience: self.jwt_audience.clone(),
        }
    }
}

#[derive(Debug, Args)]
pub struct TokenArgs {
    /// Who the token is for.
    #[arg(long)]
    sub: String,
    /// admin, editor or viewer.
    #[arg(long, value_parser = parse_role)]
    role: Role,
    /// How long the token is valid, as 30m, 1h or 7d.
    #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
    ttl: Duration,
    #[command(flatten)]
    secret: SecretArgs,
}

pub fn parse_role(value: &str) -> Result<Role, String> {
    Role::from_name(value)
        .ok_or_else(|| format!("unknown role {value:?}: expected admin, editor or viewer"))
}

pub fn run(args: TokenArgs) -> Result<(), Failure> {
    let (secret, _) = args.secret.resolve()?;
    let token = auth::mint(
        &secret,
        &args.sub,
        args.role,
        args.ttl,
        &args.secret.expect(),
    )
    .map_err(|e| Failure::Other(format!("cannot sign the token: {e}")))?;
    println!("{token}");
    Ok(())
}
