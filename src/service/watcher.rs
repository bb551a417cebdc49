//! WatchUserEvents' response stream: subscriptions in, matching events out.
//!
//! The stream takes its place on the bus when the call starts, so nothing
//! published after that is missed; each subscription then lets through only
//! events with a later sequence number than the bus had when the
//! subscription was read, and is confirmed with a "subscribed" event, after
//! which the client knows every later change will reach it.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Arc;

use futures_util::stream::{self, Stream};
use tokio::sync::broadcast::{Receiver, error::RecvError};
use tokio::sync::watch;
use tonic::{Status, Streaming};

use crate::clock;
use crate::domain::Subscription;
use crate::error::Error;
use crate::events::{Event, EventBus};
use crate::pb;

pub type EventStream = Pin<Box<dyn Stream<Item = Result<pb::UserEvent, Status>> + Send>>;

/// The `event_type` that confirms a subscription.
pub const SUBSCRIBED: &str = "subscribed";

struct Watcher {
    inbound: Streaming<pb::EventStreamRequest>,
    stopping: watch::Receiver<bool>,
    inbound_open: bool,
    bus: EventBus,
    events: Receiver<Arc<Event>>,
    /// `*`: events after this sequence number, for every user.
    all_after: Option<u64>,
    /// Per user id: events after this sequence number.
    users: HashMap<String, u64>,
    done: bool,
    /// Events taken straight off the bus since the inbound stream and the
    /// shutdown signal were last looked at.
    streak: u32,
}

/// Events a watcher takes off the bus without looking at its inbound
/// stream or the shutdown signal. Looking costs a lock on the connection's
/// HTTP/2 state, which at a million deliveries a second was an eighth of the
/// server's time; looking every so often still reads a new subscription, or
/// notices shutdown, within a few events. Skipping the look cannot lose an
/// event: an event already on the bus is older than any subscription read
/// after it, so that subscription would not have let it through.
const STREAK: u32 = 32;

impl Watcher {
    fn wants(&self, event: &Event) -> bool {
        self.all_after.is_some_and(|after| event.seq > after)
            || self
                .users
                .get(&event.user_id)
                .is_some_and(|&after| event.seq > after)
    }

    fn subscribe(&mut self, subscription: Subscription) -> pb::UserEvent {
        let after = self.bus.last_seq();
        let user_id = match subscription {
            Subscription::All => {
                self.all_after.get_or_insert(after);
                "*".to_owned()
            }
            Subscription::One(id) => {
                let id = id.as_str().to_owned();
                self.users.entry(id.clone()).or_insert(after);
                id
            }
        };
        pb::UserEvent {
            event_type: SUBSCRIBED.to_owned(),
            user_id,
            payload: Default::default(),
            timestamp: clock::unix_millis(),
        }
    }

    /// The next thing to send; `None` ends the stream with OK.
    async fn next(&mut self) -> Option<Result<pb::UserEvent, Error>> {
        if self.done {
            return None;
        }
        while self.streak < STREAK {
            match self.events.try_recv() {
                Ok(event) => {
                    self.streak += 1;
                    if self.wants(&event) {
                        return Some(Ok(pb::UserEvent::from(&*event)));
                    }
                }
                // Empty, lagged or closed: the select below says which.
                Err(_) => break,
            }
        }
        self.streak = 0;
        loop {
            tokio::select! {
                // New subscriptions first, so that a client's request is
                // confirmed before events queued behind it are filtered.
                biased;
                request = self.inbound.message(), if self.inbound_open => match request {
                    Ok(Some(request)) => {
                        return Some(match Subscription::parse(request) {
                            Ok(subscription) => Ok(self.subscribe(subscription)),
                            Err(violations) => {
                                self.done = true;
                                Err(violations.into())
                            }
                        });
                    }
                    // The client has said all it will: keep sending while
                    // anything is subscribed.
                    Ok(None) => {
                        self.inbound_open = false;
                        if self.all_after.is_none() && self.users.is_empty() {
                            return None;
                        }
                    }
                    // The client is gone or broke the stream; nobody reads.
                    Err(_) => return None,
                },
                () = stopped(&mut self.stopping) => {
                    self.done = true;
                    return Some(Err(Error::ShuttingDown));
                }
                event = self.events.recv() => match event {
                    Ok(event) if self.wants(&event) => return Some(Ok(pb::UserEvent::from(&*event))),
                    Ok(_) => {}
                    Err(RecvError::Lagged(skipped)) => {
                        self.done = true;
                        return Some(Err(Error::WatcherLagged { skipped }));
                    }
                    Err(RecvError::Closed) => return None,
                },
            }
        }
    }
}

/// Resolves once the server is stopping.
async fn stopped(stopping: &mut watch::Receiver<bool>) {
    if stopping.wait_for(|stopping| *stopping).await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// The event stream for one WatchUserEvents call.
pub fn stream(
    inbound: Streaming<pb::EventStreamRequest>,
    bus: EventBus,
    stopping: watch::Receiver<bool>,
) -> EventStream {
    let watcher = Watcher {
        inbound,
        stopping,
        inbound_open: true,
        events: bus.subscribe(),
        bus,
        all_after: None,
        users: HashMap::new(),
        done: false,
        streak: 0,
    };
    Box::pin(stream::unfold(watcher, |mut watcher| async move {
        let item = watcher.next().await?;
        Some((item.map_err(Status::from), watcher))
    }))
}
