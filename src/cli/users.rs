//! The one-user commands, `list` and `search`: get, create, update, delete.

use std::collections::BTreeMap;
use std::io::IsTerminal;

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
    /// A label, as key=value; repeat for more.
    #[arg(long = "label", value_name = "KEY=VALUE", value_parser = parse_label)]
    labels: Vec<(String, String)>,
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
    /// A label to add or change, as key=value; repeat for more.
    #[arg(long = "label", value_name = "KEY=VALUE", value_parser = parse_label)]
    labels: Vec<(String, String)>,
    /// A label key to remove; repeat for more.
    #[arg(long = "remove-label", value_name = "KEY")]
    remove_labels: Vec<String>,
    /// Change only this version of the user (its etag, as `get` shows it):
    /// if someone changed it since, nothing changes and the command fails.
    #[arg(long, value_name = "ETAG")]
    if_match: Option<String>,
    #[command(flatten)]
    connect: ConnectArgs,
}

#[derive(Debug, Args)]
pub struct DeleteArgs {
    id: String,
    /// Delete only this version of the user (its etag).
    #[arg(long, value_name = "ETAG")]
    if_match: Option<String>,
    #[command(flatten)]
    connect: ConnectArgs,
}

#[derive(Debug, Args)]
pub struct SearchArgs {
    /// A filter, such as 'email = "*@example.com" AND labels.team = core'
    /// (see the README); empty matches everyone.
    #[arg(default_value = "")]
    filter: String,
    /// The order, such as "name" or "created_at desc, name".
    #[arg(long)]
    order_by: Option<String>,
    /// Users per page (the server's default is 50, its most 1000).
    #[arg(long)]
    page_size: Option<i32>,
    /// Start at this page (a token a previous search printed).
    #[arg(long)]
    page_token: Option<String>,
    /// Walk every page, not just the first.
    #[arg(long)]
    all: bool,
    #[command(flatten)]
    connect: ConnectArgs,
}

#[derive(Debug, Args)]
pub struct ListArgs {
    /// Only users with this role.
    #[arg(long)]
    role: Option<String>,
    /// Only users matching this filter (as in `search`).
    #[arg(long)]
    filter: Option<String>,
    /// The order (as in `search`); creation order by default.
    #[arg(long)]
    order_by: Option<String>,
    #[arg(long, default_value_t = 0)]
    offset: i32,
    /// At most this many users; 0 means all.
    #[arg(long, default_value_t = 0)]
    limit: i32,
    #[command(flatten)]
    connect: ConnectArgs,
}

/// `key=value`, for `--label`.
fn parse_label(text: &str) -> Result<(String, String), String> {
    text.split_once('=')
        .map(|(key, value)| (key.to_owned(), value.to_owned()))
        .ok_or_else(|| format!("expected KEY=VALUE, found {text:?}"))
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
        labels: args.labels.into_iter().collect(),
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
        etag: args.if_match.unwrap_or_default(),
        set_labels: args.labels.into_iter().collect::<BTreeMap<_, _>>(),
        remove_labels: args.remove_labels,
    };
    let user = client.update_user(request).await?;
    print_one(&args.connect, user)
}

pub async fn delete(args: DeleteArgs) -> Result<(), Failure> {
    let client = args.connect.client(Some(DEFAULT_TIMEOUT))?;
    let user = client
        .delete_user_version(&args.id, args.if_match.as_deref().unwrap_or_default())
        .await?;
    print_one(&args.connect, user)
}

pub async fn list(args: ListArgs) -> Result<(), Failure> {
    // A listing may be long: no deadline unless one is asked for.
    let client = args.connect.client(None)?;
    let request = pb::ListUsersRequest {
        limit: args.limit,
        offset: args.offset,
        filter_role: args.role.unwrap_or_default(),
        filter: args.filter.unwrap_or_default(),
        order_by: args.order_by.unwrap_or_default(),
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

/// One page, or with `--all` every page, of a search. The total goes to
/// stderr, and with `--all` a progress line on a terminal; the users go to
/// stdout, so that a pipe gets users only.
pub async fn search(args: SearchArgs) -> Result<(), Failure> {
    let client = args.connect.client(Some(DEFAULT_TIMEOUT))?;
    let mut request = pb::SearchUsersRequest {
        filter: args.filter,
        order_by: args.order_by.unwrap_or_default(),
        page_size: args.page_size.unwrap_or_default(),
        page_token: args.page_token.unwrap_or_default(),
    };
    let mut printer = UserPrinter::new(args.connect.output);
    let progress = args.all && std::io::stderr().is_terminal();
    let mut shown = 0u64;
    loop {
        let page = client.search_users(request.clone()).await?;
        shown += page.users.len() as u64;
        for user in page.users {
            printer
                .print(user)
                .map_err(|e| Failure::Other(e.to_string()))?;
        }
        if progress {
            eprint!("\r{shown} of {} users", page.total_size);
        }
        if !args.all || page.next_page_token.is_empty() {
            if progress {
                eprintln!();
            } else {
                eprintln!("{shown} of {} users", page.total_size);
            }
            if !page.next_page_token.is_empty() {
                eprintln!("next page: --page-token {}", page.next_page_token);
            }
            return Ok(());
        }
        request.page_token = page.next_page_token;
    }
}
