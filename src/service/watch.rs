//! WatchUserEvents' response stream: subscriptions in, matching events out.
//!
//! The stream takes its place on the bus (a `Tap`) when the call starts.
//! Each subscription asks the bus for its users' events (or everyone's),
//! lets through only those with a later sequence number than the bus had
//! when it was read, and is confirmed with a "subscribed" event, after
//! which the client knows every later change will reach it. A stream that
//! follows some users is woken only by their changes.
//!
//! A subscription that resumes (`resume_after`) first replays its changes
//! from the store's history, a page at a time as the client reads them, so
//! that a long replay is never held in memory. It reads pages without
//! following the bus until it has caught up, then follows the bus and reads
//! once more: the changes that came in between, which the bus had published
//! before it was followed. From there the bus delivers, past the last
//! change replayed, so nothing is missed and nothing comes twice.

use std::collections::{HashMap, VecDeque};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use futures_util::stream::{self, Stream};
use tokio::sync::watch;
use tokio::time::Instant;
use tonic::Status;

use super::slots::Slot;
use crate::auth::{AuthError, LEEWAY, RateLimiter};
use crate::clock;
use crate::domain::{Subscribe, Subscription, Violations};
use crate::error::Error;
use crate::events::{Event, Missed, Tap};
use crate::pb;
use crate::store::{Interest, UserStore};

pub type EventStream =
    Pin<Box<dyn Stream<Item = Result<pb::Outgoing<pb::UserEvent>, Status>> + Send>>;

/// A change as a watcher sends it: encoded once for all of them.
fn outgoing(event: &Event) -> pb::Outgoing<pb::UserEvent> {
    pb::Outgoing::Encoded(event.wire.clone())
}

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

/// Changes a replay reads from the store at a time: what it holds in memory.
const REPLAY_PAGE: usize = 256;

/// A subscription replaying its changes before it goes live.
struct Replay {
    targets: Vec<Subscription>,
    interest: Interest,
    /// The last change replayed, or the resume point.
    cursor: u64,
    /// The bus's sequence when the replay followed it, once it has.
    followed: Option<u64>,
    /// Read from the store, not yet sent.
    page: VecDeque<Event>,
    /// The last page read was the store's end.
    caught_up: bool,
}

struct Watcher {
    bounds: Bounds,
    inbound: Subscriptions,
    stopping: watch::Receiver<bool>,
    inbound_open: bool,
    store: Arc<dyn UserStore>,
    events: Tap,
    /// Confirmations to send before anything else.
    pending: VecDeque<pb::Outgoing<pb::UserEvent>>,
    replay: Option<Replay>,
    /// The newest change sent on this stream: a live subscription added
    /// later starts after it, even when the bus is behind a replay.
    sent_through: u64,
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

    /// Takes one more request's subscriptions, within the stream's bounds:
    /// confirms each, and for one that resumes, starts its replay with a
    /// first page, so that a resume point out of range is refused before
    /// anything is confirmed.
    async fn subscribe(&mut self, request: Subscribe) -> Result<(), Error> {
        let new = request
            .targets
            .iter()
            .filter(|target| match target {
                Subscription::All => self.all_after.is_none(),
                Subscription::One(id) => !self.users.contains_key(id.as_str()),
            })
            .count();
        for _ in &request.targets {
            self.bounds
                .rate
                .take(self.bounds.caller.clone())
                .map_err(|wait| Error::RateLimited { retry_after: wait })?;
        }
        let held = self.users.len() + usize::from(self.all_after.is_some());
        if held + new > self.bounds.max_subscriptions {
            return Err(Error::TooManySubscriptions(self.bounds.max_subscriptions));
        }
        // A replay sent while other subscriptions' live events wait would
        // come out of order with them: resuming is a stream's first request.
        if request.resume_after > 0 && held > 0 {
            let mut violations = Violations::default();
            violations.check::<(), _>(
                "resume_after",
                Err("is for a stream's first request, and this stream already follows users: open another stream to resume"),
            );
            return Err(Error::InvalidArgument(violations));
        }
        let acks: Vec<pb::UserEvent> = request
            .targets
            .iter()
            .map(|target| pb::UserEvent {
                event_type: SUBSCRIBED.to_owned(),
                user_id: match target {
                    Subscription::All => "*".to_owned(),
                    Subscription::One(id) => id.as_str().to_owned(),
                },
                timestamp: clock::unix_millis(),
                ..Default::default()
            })
            .collect();
        if request.resume_after == 0 {
            let after = self.follow(&request.targets);
            self.start(&request.targets, after);
        } else {
            let interest = if request.targets.contains(&Subscription::All) {
                Interest::All
            } else {
                Interest::Users(
                    request
                        .targets
                        .iter()
                        .filter_map(|target| match target {
                            Subscription::One(id) => Some(id.as_str().to_owned()),
                            Subscription::All => None,
                        })
                        .collect(),
                )
            };
            let mut replay = Replay {
                targets: request.targets,
                interest,
                cursor: request.resume_after,
                followed: None,
                page: VecDeque::new(),
                caught_up: false,
            };
            self.read_page(&mut replay).await?;
            self.replay = Some(replay);
        }
        self.pending
            .extend(acks.into_iter().map(pb::Outgoing::Message));
        Ok(())
    }

    /// Follows `targets` on the bus; returns the bus's sequence then.
    fn follow(&mut self, targets: &[Subscription]) -> u64 {
        let mut after = 0;
        for target in targets {
            after = match target {
                Subscription::All => self.events.follow_all(),
                Subscription::One(id) => self.events.follow(id.as_str()),
            };
        }
        after
    }

    /// Lets the bus's events for `targets` through, past `after` and past
    /// whatever this stream has sent already: after a replay on PostgreSQL
    /// the bus may still be behind the changes replayed.
    fn start(&mut self, targets: &[Subscription], after: u64) {
        let after = after.max(self.sent_through);
        for target in targets {
            match target {
                Subscription::All => {
                    self.all_after.get_or_insert(after);
                }
                Subscription::One(id) => {
                    self.users.entry(id.as_str().to_owned()).or_insert(after);
                }
            }
        }
    }

    /// Reads the replay's next page from the store.
    async fn read_page(&mut self, replay: &mut Replay) -> Result<(), Error> {
        let read = self
            .store
            .changes(replay.cursor, &replay.interest, REPLAY_PAGE);
        let page = tokio::select! {
            biased;
            () = stopped(&mut self.stopping) => return Err(Error::ShuttingDown),
            page = read => page?,
        };
        replay.caught_up = page.len() < REPLAY_PAGE;
        replay.page = page.into();
        Ok(())
    }

    /// The replay's next change; `None` once it has handed over to the bus.
    async fn replayed(&mut self) -> Option<Result<pb::Outgoing<pb::UserEvent>, Error>> {
        let mut replay = self.replay.take()?;
        loop {
            if let Some(event) = replay.page.pop_front() {
                replay.cursor = event.seq;
                if let Some(expired) = self.expired() {
                    return Some(expired);
                }
                self.replay = Some(replay);
                self.sent_through = event.seq;
                return Some(Ok(outgoing(&event)));
            }
            if replay.caught_up {
                match replay.followed {
                    // Caught up with the store: follow the bus, and read the
                    // changes it published before that once more.
                    None => {
                        replay.followed = Some(self.follow(&replay.targets));
                        replay.caught_up = false;
                    }
                    // The bus goes on from here.
                    Some(followed) => {
                        self.start(&replay.targets, followed.max(replay.cursor));
                        return None;
                    }
                }
            }
            if let Err(error) = self.read_page(&mut replay).await {
                self.done = true;
                return Some(Err(error));
            }
        }
    }

    /// Ends the stream if its token has expired: nothing is delivered
    /// after that moment.
    fn expired(&mut self) -> Option<Result<pb::Outgoing<pb::UserEvent>, Error>> {
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
    async fn next(&mut self) -> Option<Result<pb::Outgoing<pb::UserEvent>, Error>> {
        if self.done {
            return None;
        }
        if let Some(ack) = self.pending.pop_front() {
            return Some(Ok(ack));
        }
        // Tested first: at a million deliveries a second, even a replay's
        // future made and dropped for every event shows.
        if self.replay.is_some()
            && let Some(replayed) = self.replayed().await
        {
            return Some(replayed);
        }
        while self.streak < STREAK {
            match self.events.try_recv() {
                Ok(event) => {
                    // The clock is read once a streak, not once an event (it
                    // was a thirtieth of a million deliveries' time). A
                    // streak is taken in one go, in microseconds, unless the
                    // client's flow control stops it part way: then the
                    // rest of it, at most STREAK - 1 events, may follow
                    // after the token's end.
                    if self.streak == 0
                        && let Some(expired) = self.expired()
                    {
                        return Some(expired);
                    }
                    self.streak += 1;
                    if self.wants(&event) {
                        self.sent_through = event.seq;
                        return Some(Ok(outgoing(&event)));
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
                        let subscribed = match request {
                            Ok(request) => self.subscribe(request).await,
                            Err(invalid) => Err(Error::from(invalid)),
                        };
                        if let Err(error) = subscribed {
                            self.done = true;
                            return Some(Err(error));
                        }
                        return self.pending.pop_front().map(Ok);
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
                        self.sent_through = event.seq;
                        return Some(Ok(outgoing(&event)));
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
/// stream, each request read as it arrives (a request that does not
/// validate ends the stream), or SubscribeUserEvents' one request, as a
/// stream that ends.
pub type Subscriptions =
    Pin<Box<dyn Stream<Item = Result<Result<Subscribe, Violations>, Status>> + Send + 'static>>;

/// The event stream for one WatchUserEvents or SubscribeUserEvents call.
pub fn stream(
    inbound: Subscriptions,
    store: Arc<dyn UserStore>,
    bounds: Bounds,
    stopping: watch::Receiver<bool>,
) -> EventStream {
    let events = store.events().tap();
    let watcher = Watcher {
        bounds,
        inbound,
        stopping,
        inbound_open: true,
        store,
        events,
        pending: VecDeque::new(),
        replay: None,
        all_after: None,
        users: HashMap::new(),
        done: false,
        streak: 0,
        sent_through: 0,
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
            resume_after: 0,
        };
        Box::pin(stream::iter([Ok(Subscribe::parse(request))]).chain(stream::pending()))
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
        let bus = crate::events::EventBus::new(4);
        let store = Arc::new(crate::store::MemoryStore::with_events(bus.clone()));
        let (_stop, stopping) = watch::channel(false);
        let mut events = stream(subscribed_to_all(), store, unbounded(), stopping);
        let mut next_event = async || -> pb::UserEvent {
            let item = events.next().await.unwrap().unwrap();
            item.into_message().unwrap()
        };
        assert_eq!(next_event().await.event_type, SUBSCRIBED);

        let base = bus.last_seq();
        bus.publish(base + 1, EventKind::Created, &user(0));
        let first = next_event().await;
        assert_eq!(pb::User::decode(first.payload).unwrap().name, "u0");

        for n in 1..=10 {
            bus.publish(base + n as u64 + 1, EventKind::Created, &user(n));
        }
        let status = events.next().await.unwrap().unwrap_err();
        assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
        assert!(events.next().await.is_none(), "nothing after the error");
    }
}
