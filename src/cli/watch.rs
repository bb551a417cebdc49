//! `usersvc watch ID|'*'…`: subscribes and prints events until Ctrl-C.

use clap::Args;

use super::output::print_event;
use super::{ConnectArgs, Failure};
use crate::client::{ResumingWatch, WatchItem};

#[derive(Debug, Args)]
pub struct WatchArgs {
    /// User ids to follow, or '*' for every user.
    #[arg(required = true)]
    subscriptions: Vec<String>,
    /// Replay the changes after this sequence first (a UserEvent.sequence,
    /// or a listing's); 0 starts from now. A broken stream resumes by
    /// itself either way.
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(i64).range(0..))]
    resume_after: i64,
    #[command(flatten)]
    connect: ConnectArgs,
}

pub async fn run(args: WatchArgs) -> Result<(), Failure> {
    let client = args.connect.client(None)?;
    let mut watch = ResumingWatch::start(client, args.subscriptions, args.resume_after).await?;
    loop {
        tokio::select! {
            item = watch.next() => match item? {
                WatchItem::Event(event) => print_event(args.connect.output, event)
                    .map_err(|e| Failure::Other(e.to_string()))?,
                WatchItem::Reconnected { error, resumed_after, took } => eprintln!(
                    "watch: the stream broke ({}: {}); reconnected after {} ms, resuming after change {resumed_after}",
                    crate::error::code_name(error.code()),
                    error.message(),
                    took.as_millis()
                ),
            },
            _ = tokio::signal::ctrl_c() => return Ok(()),
        }
    }
}
