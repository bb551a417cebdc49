//! `usersvc bulk-create FILE`: one all-or-nothing BulkCreateUsers from a
//! file of JSON lines or CSV (with a header), or `-` for stdin.
//!
//! The whole file is read and checked for syntax first, so that a typo on
//! line 90,000 is reported before anything is sent; the server still decides
//! validity, and names the failing item's 0-based index.

use std::io::{IsTerminal, Read};
use std::path::PathBuf;

use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use serde::Deserialize;
use tokio_stream::StreamExt;

use super::output::Output;
use super::parse_role;
use super::{ConnectArgs, Failure};
use crate::pb;

#[derive(Debug, Args)]
pub struct BulkCreateArgs {
    /// JSON lines ({"name":…,"email":…,"role":…,"bio":…}) or CSV with a
    /// header row (name,email,role,bio); `-` reads stdin.
    file: PathBuf,
    #[command(flatten)]
    connect: ConnectArgs,
}

/// One user in the input file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Row {
    name: String,
    email: String,
    #[serde(default)]
    role: Option<String>,
    #[serde(default)]
    bio: Option<String>,
    /// JSON lines only: an object of label keys to values.
    #[serde(default)]
    labels: std::collections::BTreeMap<String, String>,
}

impl Row {
    fn into_request(self) -> Result<pb::CreateUserRequest, String> {
        let role = match self.role.as_deref().map(str::trim) {
            None | Some("") => pb::UserRole::Unspecified,
            Some(name) => parse_role(name)?.into(),
        };
        Ok(pb::CreateUserRequest {
            name: self.name,
            email: self.email,
            role: role as i32,
            bio: self.bio,
            labels: self.labels,
        })
    }
}

/// Reads every row; JSON lines if the first non-blank character is `{`,
/// CSV otherwise. Errors name the line.
fn parse(text: &str) -> Result<Vec<pb::CreateUserRequest>, String> {
    let rows: Vec<(usize, Row)> = if text.trim_start().starts_with('{') {
        text.lines()
            .enumerate()
            .filter(|(_, line)| !line.trim().is_empty())
            .map(|(i, line)| {
                serde_json::from_str(line)
                    .map(|row| (i + 1, row))
                    .map_err(|e| format!("line {}: {e}", i + 1))
            })
            .collect::<Result<_, _>>()?
    } else {
        csv::ReaderBuilder::new()
            .trim(csv::Trim::Headers)
            .from_reader(text.as_bytes())
            .deserialize()
            .enumerate()
            .map(|(i, row)| {
                row.map(|row| (i + 2, row))
                    .map_err(|e| format!("line {}: {e}", i + 2))
            })
            .collect::<Result<_, _>>()?
    };
    rows.into_iter()
        .map(|(line, row)| row.into_request().map_err(|e| format!("line {line}: {e}")))
        .collect()
}

pub async fn run(args: BulkCreateArgs) -> Result<(), Failure> {
    let mut text = String::new();
    let read = if args.file.as_os_str() == "-" {
        std::io::stdin().read_to_string(&mut text)
    } else {
        std::fs::File::open(&args.file).and_then(|mut f| f.read_to_string(&mut text))
    };
    read.map_err(|e| Failure::Usage(format!("cannot read {}: {e}", args.file.display())))?;
    let requests =
        parse(&text).map_err(|e| Failure::Usage(format!("{}: {e}", args.file.display())))?;

    let bar = if std::io::stderr().is_terminal() {
        ProgressBar::new(requests.len() as u64)
    } else {
        ProgressBar::hidden()
    };
    bar.set_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} sent ({per_sec})")
            .expect("static template"),
    );
    let counter = bar.clone();
    let stream = tokio_stream::iter(requests).map(move |request| {
        counter.inc(1);
        request
    });
    // No default deadline: a large file takes as long as it takes.
    let client = args.connect.client(None)?;
    let result = client.bulk_create_users(stream).await;
    bar.finish_and_clear();
    let response = result?;
    match args.connect.output {
        Output::Table => println!("created {} users", response.total_count),
        Output::Json => {
            let ids: Vec<&str> = response.users.iter().map(|u| u.id.as_str()).collect();
            let summary = serde_json::json!({ "total_count": response.total_count, "ids": ids });
            println!("{summary}");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_lines_and_csv_read_the_same_users() {
        let json = r#"{"name":"Ann","email":"ann@example.com","role":"admin"}

{"name":"Bob","email":"bob@example.com","bio":"hi"}"#;
        let csv = "name,email,role,bio\nAnn,ann@example.com,admin,\nBob,bob@example.com,,hi\n";
        let from_json = parse(json).unwrap();
        assert_eq!(from_json, parse(csv).unwrap());
        assert_eq!(from_json[0].role, pb::UserRole::Admin as i32);
        assert_eq!(from_json[1].bio.as_deref(), Some("hi"));
    }

    #[test]
    fn errors_name_the_line() {
        let err = parse("{\"name\":\"A\",\"email\":\"a@b.co\"}\n{\"nme\":\"B\"}\n").unwrap_err();
        assert!(err.starts_with("line 2:"), "{err}");
        let err = parse("name,email,role\nA,a@b.co,king\n").unwrap_err();
        assert!(
            err.starts_with("line 2:") && err.contains("unknown role"),
            "{err}"
        );
    }
}
