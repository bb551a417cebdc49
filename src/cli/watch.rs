//! `usersvc watch ID|'*'…`: subscribes and prints events until Ctrl-C.

use clap::Args;
use tokio_stream::StreamExt;

use super::output::print_event;
use super::{ConnectArgs, Failure};
use crate::pb;

#[derive(Debug, Args)]
pub struct WatchArgs {
    /// User ids to follow, or '*' for every user.
    #[arg(required = true)]
    subscriptions: Vec<String>,
    #[command(flatten)]
    connect: ConnectArgs,
}

pub async fn run(args: WatchArgs) -> Result<(), Failure> {
    let client = args.connect.client(None)?;
    // Keep our side open: closing it would tell the server we are done.
    let subscriptions = tokio_stream::iter(
        args.subscriptions
            .into_iter()
            .map(|user_id| pb::EventStreamRequest { user_id }),
    )
    .chain(tokio_stream::pending());
    let mut events = client.watch_user_events(subscriptions).await?;
    loop {
        tokio::select! {
            event = events.message() => match event? {
                Some(event) => print_event(args.connect.output, event)
                    .map_err(|e| Failure::Other(e.to_string()))?,
                None => return Ok(()),
            },
            _ = tokio::signal::ctrl_c() => return Ok(()),
        }
    }
}
