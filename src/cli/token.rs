//! `usersvc token`: mints a token with the same secret `serve` uses.

use std::time::Duration;

use clap::Args;

use super::{Failure, SecretArgs, parse_role};
use crate::auth;
use crate::domain::Role;

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
