//! WatchUserEvents' response stream: subscriptions in, matching events out.
//!
//! The stream takes its place on the bus (a `Tap`) when the call starts.
//! Each subscription asks the bus for its users' events (or everyone's),
//! lets through only those with a later sequence number than the bus had
//! when it was read, and is confirmed with a "subscribed" event, after
//! which the client knows every later change will reach it. A stream that
//! follows some users is woken only by their changes.

use std::collections::HashMap;
use std::pin::Pin;
use std::time::Duration;

use futures_util::StreamExt;
use futures_util::stream::{self, Stream};
use tokio::sync::watch;
use tokio::time::Instant;
use tonic::Status;

use super::slots::Slot;
use crate::auth::{AuthError, LEEWAY, RateLimiter};
use crate::clock;
use crate::domain::Subscription;
use crate::error::Error;
use crate::events::{Event, EventBus, Missed, Tap};
use crate::pb;

pub type EventStream = Pin<Box<dyn Stream<Item = Result<pb::UserEvent, Status>> + Send>>;

/// The `event_type` that confirms a subscription.
pub const SUBSCRIBED: &str = "subscribed";

/// What bounds one watch stream's cost.
pub struct Bounds {
    /// Its place among the open watch streams, held (never read) until the
    /// stream ends and drops it.
    pub _slot: Slot,
    /// Its caller's key, whose rate limit each subscription takes from.
    pub caller: String,
    pub rate: RateLimiter,
    pub max_subscriptions: usize,
    /// When its token stops being valid: the stream ends then.
    pub expires: Option<Instant>,
}

/// The moment a token whose `exp` is `exp` (Unix seconds) stops being
/// accepted: `exp` plus the leeway, as the check of a new call allows.
/// Counted in milliseconds: in whole seconds the stream outlived its
/// token by up to a second, and delivered changes in that second.
pub fn expiry(exp: u64) -> Instant {
    let now_ms = u64::try_from(clock::unix_millis()).unwrap_or(0);
    let end_ms = exp.saturating_add(LEEWAY.as_secs()).saturating_mul(1000);
    let left = Duration::from_millis(end_ms.saturating_sub(now_ms));
    // A token that outlives any Instant simply never ends its stream.
    let never = Duration::from_secs(100 * 365 * 24 * 3600);
    let now = Instant::now();
    now.checked_add(left).unwrap_or(now + never)
}

struct Watcher {
    bounds: Bounds,
    inbound: Subscriptions,
    stopping: watch::Receiver<bool>,
    inbound_open: bool,
    events: Tap,
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

    /// Takes one more subscription, within the stream's bounds.
    fn subscribe(&mut self, subscription: Subscription) -> Result<pb::UserEvent, Error> {
        self.bounds
            .rate
            .take(self.bounds.caller.clone())
            .map_err(|wait| Error::RateLimited { retry_after: wait })?;
        let held = self.users.len() + usize::from(self.all_after.is_some());
        let new = match &subscription {
            Subscription::All => self.all_after.is_none(),
            Subscription::One(id) => !self.users.contains_key(id.as_str()),
        };
        if new && held >= self.bounds.max_subscriptions {
            return Err(Error::TooManySubscriptions(self.bounds.max_subscriptions));
        }
        let user_id = match subscription {
            Subscription::All => {
                let after = self.events.follow_all();
                self.all_after.get_or_insert(after);
                "*".to_owned()
            }
            Subscription::One(id) => {
                let id = id.as_str().to_owned();
                let after = self.events.follow(&id);
                self.users.entry(id.clone()).or_insert(after);
                id
            }
        };
        Ok(pb::UserEvent {
            event_type: SUBSCRIBED.to_owned(),
            user_id,
            payload: Default::default(),
            timestamp: clock::unix_millis(),
        })
    }

    /// Ends the stream if its token has expired: nothing is delivered
    /// after that moment.
    fn expired(&mut self) -> Option<Result<pb::UserEvent, Error>> {
        let expired = self
            .bounds
            .expires
            .is_some_and(|expires| Instant::now() >= expires);
        expired.then(|| {
            self.done = true;
            Err(Error::Auth(AuthError::Expired))
        })
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
                        if let Some(expired) = self.expired() {
                            return Some(expired);
                        }
                        return Some(Ok(pb::UserEvent::from(&*event)));
                    }
                }
                // try_recv moves past the lost events as it reports them,
                // so the lag must be answered here: recv would not repeat it.
                Err(Missed::Lagged(skipped)) => {
                    self.done = true;
                    return Some(Err(Error::WatcherLagged { skipped }));
                }
                // Nothing waiting: the select below waits.
                Err(Missed::Empty) => break,
            }
        }
        self.streak = 0;
        loop {
            tokio::select! {
                // New subscriptions first, so that a client's request is
                // confirmed before events queued behind it are filtered.
                biased;
                request = self.inbound.next(), if self.inbound_open => match request.transpose() {
                    Ok(Some(request)) => {
                        let subscribed = Subscription::parse(request)
                            .map_err(Error::from)
                            .and_then(|subscription| self.subscribe(subscription));
                        self.done = subscribed.is_err();
                        return Some(subscribed);
                    }
                    // The client has said all it will: keep sending while
                    // anything is subscribed.
                    Ok(None) => {
                        self.inbound_open = false;
                        if self.all_after.is_none() && self.users.is_empty() {
                            return None;
                        }
                    }
                    // A message that does not parse, or one too large: the
                    // client is told why. (A client that is gone reads
                    // nothing, and loses nothing.)
                    Err(status) => {
                        self.done = true;
                        return Some(Err(Error::RequestStream(status)));
                    }
                },
                () = stopped(&mut self.stopping) => {
                    self.done = true;
                    return Some(Err(Error::ShuttingDown));
                }
                () = until(self.bounds.expires) => {
                    return self.expired();
                }
                event = self.events.recv() => match event {
                    Ok(event) if self.wants(&event) => {
                        if let Some(expired) = self.expired() {
                            return Some(expired);
                        }
                        return Some(Ok(pb::UserEvent::from(&*event)));
                    }
                    Ok(_) => {}
                    Err(Missed::Lagged(skipped)) => {
                        self.done = true;
                        return Some(Err(Error::WatcherLagged { skipped }));
                    }
                    Err(Missed::Empty) => {}
                },
            }
        }
    }
}

/// Resolves at `moment`; never, when there is none.
async fn until(moment: Option<Instant>) {
    match moment {
        Some(moment) => tokio::time::sleep_until(moment).await,
        None => std::future::pending().await,
    }
}

/// Resolves once the server is stopping.
async fn stopped(stopping: &mut watch::Receiver<bool>) {
    if stopping.wait_for(|stopping| *stopping).await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// Where a watcher's subscriptions come from: WatchUserEvents' request
/// stream, or SubscribeUserEvents' one request, as a stream that ends.
pub type Subscriptions =
    Pin<Box<dyn Stream<Item = Result<pb::EventStreamRequest, Status>> + Send + 'static>>;

/// The event stream for one WatchUserEvents or SubscribeUserEvents call.
pub fn stream(
    inbound: Subscriptions,
    bus: EventBus,
    bounds: Bounds,
    stopping: watch::Receiver<bool>,
) -> EventStream {
    let watcher = Watcher {
        bounds,
        inbound,
        stopping,
        inbound_open: true,
        events: bus.tap(),
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

#[cfg(test)]
mod tests {
    use futures_util::StreamExt;
    use prost::Message;
    use tonic::Code;

    use super::*;
    use crate::domain::{NewUser, UserId};
    use crate::events::EventKind;

    /// A request stream that subscribes to everything, then stays open.
    fn subscribed_to_all() -> Subscriptions {
        let request = pb::EventStreamRequest {
            user_id: "*".into(),
        };
        Box::pin(stream::iter([Ok(request)]).chain(stream::pending()))
    }

    /// Bounds that nothing in these tests reaches.
    fn unbounded() -> Bounds {
        Bounds {
            _slot: super::super::slots::StreamSlots::new("watch", 1, None)
                .acquire("test".into())
                .unwrap(),
            caller: "test".into(),
            rate: RateLimiter::new(None),
            max_subscriptions: 10,
            expires: None,
        }
    }

    #[test]
    fn a_token_that_never_expires_does_not_overflow() {
        let far = expiry(u64::MAX);
        assert!(far > Instant::now() + Duration::from_secs(3600 * 24 * 365));
        assert!(expiry(0) <= Instant::now(), "an exp long gone is now");
    }

    fn user(n: usize) -> crate::domain::User {
        NewUser::parse(pb::CreateUserRequest {
            name: format!("u{n}"),
            email: format!("u{n}@example.com"),
            role: pb::UserRole::Viewer as i32,
            bio: None,
            ..Default::default()
        })
        .unwrap()
        .into_user(UserId::generate(), 0)
    }

    /// A watcher that falls behind between two events it takes straight off
    /// the bus is told so, rather than skipping what it lost.
    #[tokio::test]
    async fn falling_behind_mid_streak_ends_the_stream_with_resource_exhausted() {
        let bus = EventBus::new(4);
        let (_stop, stopping) = watch::channel(false);
        let mut events = stream(subscribed_to_all(), bus.clone(), unbounded(), stopping);
        assert_eq!(events.next().await.unwrap().unwrap().event_type, SUBSCRIBED);

        bus.publish(EventKind::Created, &user(0));
        let first = events.next().await.unwrap().unwrap();
        assert_eq!(pb::User::decode(first.payload).unwrap().name, "u0");

        for n in 1..=10 {
            bus.publish(EventKind::Created, &user(n));
        }
        let status = events.next().await.unwrap().unwrap_err();
        assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
        assert!(events.next().await.is_none(), "nothing after the error");
    }
}
