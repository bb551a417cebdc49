//! The one-user commands and `list`: get, create, update, delete.

use clap::Args;

use super::output::UserPrinter;
use super::parse_role;
use super::{ConnectArgs, DEFAULT_TIMEOUT, Failure};
use crate::domain::Role;
use crate::pb;

#[derive(Debug, Args)]
pub struct GetArgs {
    id: String,
    #[command(flatten)]
    connect: ConnectArgs,
}

#[derive(Debug, Args)]
pub struct CreateArgs {
    #[arg(long)]
    name: String,
    #[arg(long)]
    email: String,
    /// admin, editor or viewer (the server's default is viewer).
    #[arg(long, value_parser = parse_role)]
    role: Option<Role>,
    #[arg(long)]
    bio: Option<String>,
    #[command(flatten)]
    connect: ConnectArgs,
}

#[derive(Debug, Args)]
pub struct UpdateArgs {
    id: String,
    #[arg(long)]
    name: Option<String>,
    #[arg(long)]
    email: Option<String>,
    #[arg(long, value_parser = parse_role)]
    role: Option<Role>,
    /// New bio; an empty string removes it.
    #[arg(long)]
    bio: Option<String>,
    #[command(flatten)]
    connect: ConnectArgs,
}

#[derive(Debug, Args)]
pub struct DeleteArgs {
    id: String,
    #[command(flatten)]
    connect: ConnectArgs,
}

#[derive(Debug, Args)]
pub struct ListArgs {
    /// Only users with this role.
    #[arg(long)]
    role: Option<String>,
    #[arg(long, default_value_t = 0)]
    offset: i32,
    /// At most this many users; 0 means all.
    #[arg(long, default_value_t = 0)]
    limit: i32,
    #[command(flatten)]
    connect: ConnectArgs,
}

fn wire_role(role: Option<Role>) -> Option<i32> {
    role.map(|role| pb::UserRole::from(role) as i32)
}

fn print_one(connect: &ConnectArgs, user: pb::User) -> Result<(), Failure> {
    UserPrinter::new(connect.output)
        .print(user)
        .map_err(|e| Failure::Other(e.to_string()))
}

pub async fn get(args: GetArgs) -> Result<(), Failure> {
    let client = args.connect.client(Some(DEFAULT_TIMEOUT))?;
    let user = client.get_user(&args.id).await?;
    print_one(&args.connect, user)
}

pub async fn create(args: CreateArgs) -> Result<(), Failure> {
    let client = args.connect.client(Some(DEFAULT_TIMEOUT))?;
    let request = pb::CreateUserRequest {
        name: args.name,
        email: args.email,
        role: wire_role(args.role).unwrap_or_default(),
        bio: args.bio,
    };
    // A fresh key per invocation makes the client's retries safe.
    let key = uuid::Uuid::now_v7().to_string();
    let user = client.create_user(request, Some(&key)).await?;
    print_one(&args.connect, user)
}

pub async fn update(args: UpdateArgs) -> Result<(), Failure> {
    let client = args.connect.client(Some(DEFAULT_TIMEOUT))?;
    let request = pb::UpdateUserRequest {
        user_id: args.id,
        name: args.name,
        email: args.email,
        role: wire_role(args.role),
        bio: args.bio,
    };
    let user = client.update_user(request).await?;
    print_one(&args.connect, user)
}

pub async fn delete(args: DeleteArgs) -> Result<(), Failure> {
    let client = args.connect.client(Some(DEFAULT_TIMEOUT))?;
    let user = client.delete_user(&args.id).await?;
    print_one(&args.connect, user)
}

pub async fn list(args: ListArgs) -> Result<(), Failure> {
    // A listing may be long: no deadline unless one is asked for.
    let client = args.connect.client(None)?;
    let request = pb::ListUsersRequest {
        limit: args.limit,
        offset: args.offset,
        filter_role: args.role.unwrap_or_default(),
    };
    let mut stream = client.list_users(request).await?;
    let mut printer = UserPrinter::new(args.connect.output);
    while let Some(user) = stream.message().await? {
        printer
            .print(user)
            .map_err(|e| Failure::Other(e.to_string()))?;
    }
    Ok(())
}
