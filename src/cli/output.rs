//! How client commands print: a table for people, JSON lines for programs.

use std::io::Write;
use std::time::{Duration, UNIX_EPOCH};

use prost::Message;
use serde::Serialize;

use crate::domain::is_format;
use crate::pb;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    Table,
    Json,
}

/// A user as the CLI shows it: role by name, time readable.
#[derive(Debug, Serialize)]
pub struct UserView {
    id: String,
    name: String,
    email: String,
    role: &'static str,
    created_at: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    bio: Option<String>,
    updated_at: i64,
    etag: String,
    #[serde(skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    labels: std::collections::BTreeMap<String, String>,
}

impl From<pb::User> for UserView {
    fn from(user: pb::User) -> Self {
        UserView {
            role: role_name(user.role),
            id: user.id,
            name: user.name,
            email: user.email,
            created_at: user.created_at,
            bio: user.bio,
            updated_at: user.updated_at,
            etag: user.etag,
            labels: user.labels,
        }
    }
}

/// The lowercase role name, or `unknown` for a number outside the enum.
fn role_name(role: i32) -> &'static str {
    match pb::UserRole::try_from(role) {
        Ok(pb::UserRole::Admin) => "admin",
        Ok(pb::UserRole::Editor) => "editor",
        Ok(pb::UserRole::Viewer) => "viewer",
        Ok(pb::UserRole::Unspecified) => "unspecified",
        Err(_) => "unknown",
    }
}

/// `text` safe for a terminal, whatever the server sent: control and
/// invisible or direction-changing characters are shown escaped (`\u{1b}`,
/// `\r`), so that no value can move the cursor, set the clipboard or
/// reorder a row. Everything else, accents and CJK included, is shown as
/// it is.
fn shown(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_control() || is_format(c) {
            out.extend(c.escape_debug());
        } else {
            out.push(c);
        }
    }
    out
}

fn rfc3339(unix_seconds: i64) -> String {
    let time = UNIX_EPOCH + Duration::from_secs(u64::try_from(unix_seconds).unwrap_or(0));
    humantime::format_rfc3339_seconds(time).to_string()
}

/// Prints users one at a time, so that a long listing streams.
pub struct UserPrinter {
    output: Output,
    header_done: bool,
    out: std::io::StdoutLock<'static>,
}

impl UserPrinter {
    pub fn new(output: Output) -> Self {
        Self {
            output,
            header_done: false,
            out: std::io::stdout().lock(),
        }
    }

    pub fn print(&mut self, user: pb::User) -> std::io::Result<()> {
        let view = UserView::from(user);
        match self.output {
            Output::Json => writeln!(self.out, "{}", serde_json::to_string(&view)?),
            Output::Table => {
                if !self.header_done {
                    self.header_done = true;
                    writeln!(
                        self.out,
                        "{:<36}  {:<24}  {:<32}  {:<6}  {:<20}  {:<16}  {:<24}  BIO",
                        "ID", "NAME", "EMAIL", "ROLE", "CREATED", "ETAG", "LABELS"
                    )?;
                }
                let labels: Vec<String> = view
                    .labels
                    .iter()
                    .map(|(key, value)| format!("{key}={value}"))
                    .collect();
                writeln!(
                    self.out,
                    "{:<36}  {:<24}  {:<32}  {:<6}  {:<20}  {:<16}  {:<24}  {}",
                    shown(&view.id),
                    shown(&view.name),
                    shown(&view.email),
                    view.role,
                    rfc3339(view.created_at),
                    shown(&view.etag),
                    shown(&labels.join(",")),
                    shown(&view.bio.unwrap_or_default().replace('\n', " "))
                )
            }
        }
    }
}

/// One WatchUserEvents event as the CLI shows it.
#[derive(Debug, Serialize)]
struct EventView {
    event_type: String,
    user_id: String,
    timestamp: i64,
    /// The change's place in the directory's history; 0 for "subscribed".
    sequence: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    user: Option<UserView>,
}

pub fn print_event(output: Output, event: pb::UserEvent) -> std::io::Result<()> {
    let user = (!event.payload.is_empty())
        .then(|| {
            pb::User::decode(event.payload.clone())
                .ok()
                .map(UserView::from)
        })
        .flatten();
    let view = EventView {
        event_type: event.event_type,
        user_id: event.user_id,
        timestamp: event.timestamp,
        sequence: event.sequence,
        user,
    };
    let mut out = std::io::stdout().lock();
    match output {
        Output::Json => writeln!(out, "{}", serde_json::to_string(&view)?),
        Output::Table => {
            let when = humantime::format_rfc3339_millis(
                UNIX_EPOCH + Duration::from_millis(u64::try_from(view.timestamp).unwrap_or(0)),
            );
            let who = view
                .user
                .map(|u| format!("{} <{}> {}", shown(&u.name), shown(&u.email), u.role))
                .unwrap_or_default();
            writeln!(
                out,
                "{when}  {:<13} {}  {who}",
                shown(&view.event_type),
                shown(&view.user_id)
            )
        }
    }?;
    out.flush()
}
