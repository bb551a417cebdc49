//! The event bus behind WatchUserEvents: every committed change, fanned out
//! to every watcher in this process.
//!
//! A publisher never waits for a watcher. A watcher that follows every user
//! reads at its own pace from a shared ring of the last `capacity` events
//! (a `tokio::sync::broadcast` channel); one that follows some users reads
//! their events from a queue of its own, of the same size, and is never
//! woken for anybody else's. One that falls further behind than that loses
//! its place and is told so (`Missed::Lagged`), which the service turns
//! into RESOURCE_EXHAUSTED.
//!
//! Events carry the store's sequence number: the change's place in the
//! directory's history, the same on every replica. A subscription made
//! mid-stream sees exactly the changes after the number it read, and one
//! that resumes reads the older ones from the store (`UserStore::changes`).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use prost::Message;
use tokio::sync::{broadcast, mpsc};

use crate::clock;
use crate::domain::User;
use crate::pb;

/// What happened to a user.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    Created,
    Updated,
    Deleted,
}

impl EventKind {
    /// The kind an `event_type` names.
    pub fn from_name(name: &str) -> Option<EventKind> {
        [EventKind::Created, EventKind::Updated, EventKind::Deleted]
            .into_iter()
            .find(|kind| kind.as_str() == name)
    }

    /// The `event_type` on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Created => "user_created",
            EventKind::Updated => "user_updated",
            EventKind::Deleted => "user_deleted",
        }
    }
}

/// One change, as every watcher receives it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    /// The change's sequence number in the store: increases with every
    /// change, though not always by one (PostgreSQL may skip numbers).
    pub seq: u64,
    pub kind: EventKind,
    pub user_id: String,
    /// The encoded `User`: a part of `wire`.
    pub payload: Bytes,
    /// Unix milliseconds.
    pub timestamp: i64,
    /// The whole `UserEvent`, encoded once for every watcher.
    pub wire: Bytes,
}

impl From<&Event> for pb::UserEvent {
    fn from(event: &Event) -> Self {
        pb::UserEvent {
            event_type: event.kind.as_str().to_owned(),
            user_id: event.user_id.clone(),
            payload: event.payload.clone(),
            timestamp: event.timestamp,
            sequence: i64::try_from(event.seq).unwrap_or(i64::MAX),
        }
    }
}

impl Event {
    /// The change numbered `seq`, with `user` encoded as it now is.
    pub fn of(seq: u64, kind: EventKind, user: &User, timestamp: i64) -> Event {
        let payload = pb::User::from(user.clone()).encode_to_vec();
        Event::new(seq, kind, user.id.as_str().to_owned(), &payload, timestamp)
    }

    /// The change numbered `seq` to `user_id`, whose user is encoded as
    /// `payload`. The `UserEvent` is encoded here, as prost would encode
    /// it (fields in order, defaults left out), with the payload kept as a
    /// part of it rather than a second copy.
    pub fn new(
        seq: u64,
        kind: EventKind,
        user_id: String,
        payload: &[u8],
        timestamp: i64,
    ) -> Event {
        use prost::encoding::{WireType, encode_key, encode_varint, encoded_len_varint};
        fn bytes_field(tag: u32, value: &[u8], wire: &mut Vec<u8>) {
            if !value.is_empty() {
                encode_key(tag, WireType::LengthDelimited, wire);
                encode_varint(value.len() as u64, wire);
                wire.extend_from_slice(value);
            }
        }
        fn int_field(tag: u32, value: i64, wire: &mut Vec<u8>) {
            if value != 0 {
                encode_key(tag, WireType::Varint, wire);
                encode_varint(value as u64, wire);
            }
        }
        let sequence = i64::try_from(seq).unwrap_or(i64::MAX);
        let kind_name = kind.as_str().as_bytes();
        let mut wire =
            Vec::with_capacity(kind_name.len() + user_id.len() + payload.len() + 3 * 5 + 2 * 11);
        bytes_field(1, kind_name, &mut wire);
        bytes_field(2, user_id.as_bytes(), &mut wire);
        let payload_at = wire.len()
            + usize::from(!payload.is_empty()) * (1 + encoded_len_varint(payload.len() as u64));
        bytes_field(3, payload, &mut wire);
        int_field(4, timestamp, &mut wire);
        int_field(5, sequence, &mut wire);
        let wire = Bytes::from(wire);
        Event {
            seq,
            kind,
            user_id,
            payload: wire.slice(payload_at..payload_at + payload.len()),
            timestamp,
            wire,
        }
    }
}

/// Publishes changes to the watchers that want them.
///
/// A watcher that follows every user (`*`) reads the shared ring. A watcher
/// that follows some users gets only their events, routed to a queue of its
/// own by user id, so that it costs nothing, not even a wake-up, for a
/// change to anybody else.
#[derive(Clone, Debug)]
pub struct EventBus {
    sender: broadcast::Sender<Arc<Event>>,
    /// The sequence and the routes. Held while sending, so that the order
    /// of every queue agrees with the sequence.
    state: Arc<Mutex<State>>,
    /// Events a routed queue keeps for a slow watcher, as the ring does.
    capacity: usize,
    /// Watchers on the bus now, one per open watch stream.
    taps: Arc<AtomicUsize>,
    /// Changes this bus never saw: every watcher on it when they were
    /// lost is told it fell behind.
    gaps: Arc<AtomicU64>,
}

#[derive(Debug, Default)]
struct State {
    /// The last sequence number given out.
    last_seq: u64,
    /// Who follows each user id.
    routes: HashMap<String, Vec<Route>>,
    next_tap: u64,
}

/// One watcher's interest in one user id.
#[derive(Debug)]
struct Route {
    tap: u64,
    queue: mpsc::Sender<Arc<Event>>,
    /// Events that did not fit in the watcher's queue.
    lost: Arc<AtomicU64>,
}

impl EventBus {
    /// A bus that keeps the last `capacity` events for slow watchers.
    pub fn new(capacity: usize) -> Self {
        let (sender, _) = broadcast::channel(capacity.max(1));
        Self {
            sender,
            state: Arc::default(),
            capacity: capacity.max(1),
            taps: Arc::default(),
            gaps: Arc::default(),
        }
    }

    /// Says that the changes up to `through` will never be published here
    /// (the relay found them pruned before it read them): every watcher on
    /// the bus is ended as one that fell behind, rather than going on with a
    /// hole, and one that follows from now on starts after them.
    pub fn lost(&self, through: u64) {
        let mut state = self.state();
        let count = through.saturating_sub(state.last_seq).max(1);
        self.gaps.fetch_add(count, Ordering::Relaxed);
        state.last_seq = state.last_seq.max(through);
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Starts the bus after the store's newest change, when the store
    /// opens: listings and subscriptions read their place from here.
    pub fn start_after(&self, seq: u64) {
        let mut state = self.state();
        state.last_seq = state.last_seq.max(seq);
    }

    /// Announces the change numbered `seq`, made now. Never blocks on
    /// watchers. Changes must be announced in the order of their numbers.
    ///
    /// With nobody following the user, only the sequence number moves:
    /// encoding the user for no one was a tenth of a bulk creation's time. A
    /// watcher that joins meanwhile loses nothing, since it reads the
    /// sequence number, which is already past this change, only after
    /// joining.
    pub fn publish(&self, seq: u64, kind: EventKind, user: &User) {
        {
            let mut state = self.state();
            let followed = self.sender.receiver_count() > 0
                || (!state.routes.is_empty() && state.routes.contains_key(user.id.as_str()));
            if !followed {
                state.last_seq = state.last_seq.max(seq);
                return;
            }
        }
        self.publish_event(Event::of(seq, kind, user, clock::unix_millis()));
    }

    /// Announces a change whose user is already encoded, as an outbox row
    /// written by another replica is.
    pub fn publish_event(&self, event: Event) {
        let mut state = self.state();
        // Announced already: a relay that read a change twice.
        if event.seq <= state.last_seq {
            return;
        }
        state.last_seq = event.seq;
        let event = Arc::new(event);
        if let Some(routes) = (!state.routes.is_empty())
            .then(|| state.routes.get(&event.user_id))
            .flatten()
        {
            for route in routes {
                if route.queue.try_send(Arc::clone(&event)).is_err() {
                    route.lost.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        // An error only means nobody follows every user.
        let _ = self.sender.send(event);
    }

    /// A new watcher's place on the bus, following nobody yet.
    pub fn tap(&self) -> Tap {
        self.taps.fetch_add(1, Ordering::Relaxed);
        let id = {
            let mut state = self.state();
            state.next_tap += 1;
            state.next_tap
        };
        Tap {
            bus: self.clone(),
            id,
            gaps: self.gaps.load(Ordering::Relaxed),
            queue: None,
            lost: Arc::default(),
            followed: Vec::new(),
            all: None,
        }
    }

    /// The sequence number of the last event published.
    pub fn last_seq(&self) -> u64 {
        self.state().last_seq
    }

    /// How many watchers are on the bus: one per open watch stream.
    pub fn watchers(&self) -> usize {
        self.taps.load(Ordering::Relaxed)
    }
}

/// Why a watcher got no event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Missed {
    /// Nothing yet.
    Empty,
    /// The watcher fell this many events behind and lost them.
    Lagged(u64),
}

/// The receiving end of a watcher's routed queue.
type Routed = mpsc::Receiver<Arc<Event>>;

/// One watcher's place on the bus: the events of the users it follows,
/// routed to its own queue, and once it follows everyone, the shared ring.
/// Dropping it takes its routes off the bus.
#[derive(Debug)]
pub struct Tap {
    bus: EventBus,
    id: u64,
    /// The bus's lost changes when this watcher joined.
    gaps: u64,
    /// The queue routed events arrive on, made on the first `follow`: a
    /// `*` watcher never needs one.
    queue: Option<(mpsc::Sender<Arc<Event>>, Routed)>,
    lost: Arc<AtomicU64>,
    /// The user ids routed here.
    followed: Vec<String>,
    /// The shared ring, once this watcher follows every user.
    all: Option<broadcast::Receiver<Arc<Event>>>,
}

impl Tap {
    /// Sends `user_id`'s events here from now on; returns the sequence
    /// number before the first of them.
    pub fn follow(&mut self, user_id: &str) -> u64 {
        let bus = self.bus.clone();
        let mut state = bus.state();
        self.starting(&state);
        if self.all.is_none() && !self.followed.iter().any(|id| id == user_id) {
            let capacity = self.bus.capacity;
            let (sender, _) = self.queue.get_or_insert_with(|| mpsc::channel(capacity));
            let queue = sender.clone();
            state
                .routes
                .entry(user_id.to_owned())
                .or_default()
                .push(Route {
                    tap: self.id,
                    queue,
                    lost: Arc::clone(&self.lost),
                });
            self.followed.push(user_id.to_owned());
        }
        state.last_seq
    }

    /// Sends every event here from now on; returns the sequence number
    /// before the first of them. The routes are no longer needed: events
    /// already routed are older than any the ring will bring, and are read
    /// first.
    pub fn follow_all(&mut self) -> u64 {
        let bus = self.bus.clone();
        let mut state = bus.state();
        self.starting(&state);
        if self.all.is_none() {
            self.unroute(&mut state);
            self.all = Some(self.bus.sender.subscribe());
        }
        state.last_seq
    }

    /// A tap that follows nothing yet has lost nothing: changes the bus
    /// lost before its first follow are before its starting point. Called
    /// under the state lock, which `EventBus::lost` takes too.
    fn starting(&mut self, _state: &State) {
        if self.all.is_none() && self.followed.is_empty() {
            self.gaps = self.bus.gaps.load(Ordering::Relaxed);
        }
    }

    fn unroute(&mut self, state: &mut State) {
        for user_id in self.followed.drain(..) {
            if let Some(routes) = state.routes.get_mut(&user_id) {
                routes.retain(|route| route.tap != self.id);
                if routes.is_empty() {
                    state.routes.remove(&user_id);
                }
            }
        }
    }

    /// The next event, if one is waiting.
    pub fn try_recv(&mut self) -> Result<Arc<Event>, Missed> {
        self.check_lost()?;
        if let Some(Ok(event)) = self.queue.as_mut().map(|(_, routed)| routed.try_recv()) {
            return self.unless_lost(event);
        }
        match self.all.as_mut().map(broadcast::Receiver::try_recv) {
            Some(Ok(event)) => self.unless_lost(event),
            Some(Err(broadcast::error::TryRecvError::Lagged(skipped))) => {
                Err(Missed::Lagged(skipped))
            }
            Some(Err(_)) | None => Err(Missed::Empty),
        }
    }

    /// The next event; waits for one.
    pub async fn recv(&mut self) -> Result<Arc<Event>, Missed> {
        loop {
            self.check_lost()?;
            let ring = async {
                match self.all.as_mut() {
                    Some(all) => all.recv().await,
                    None => std::future::pending().await,
                }
            };
            let routed = async {
                match self.queue.as_mut() {
                    Some((_, routed)) => routed.recv().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                biased;
                // Routed events are older than any the ring holds for this
                // watcher, so they go first.
                Some(event) = routed => return self.unless_lost(event),
                event = ring => match event {
                    Ok(event) => return self.unless_lost(event),
                    Err(broadcast::error::RecvError::Lagged(skipped)) => return Err(Missed::Lagged(skipped)),
                    // The bus outlives its watchers; wait on.
                    Err(broadcast::error::RecvError::Closed) => std::future::pending::<()>().await,
                },
            }
        }
    }

    /// `event`, unless changes were lost before it arrived: a change that
    /// follows a gap must not reach a watcher before the news of the gap.
    fn unless_lost(&self, event: Arc<Event>) -> Result<Arc<Event>, Missed> {
        self.check_lost().map(|()| event)
    }

    fn check_lost(&self) -> Result<(), Missed> {
        let gaps = self.bus.gaps.load(Ordering::Relaxed) - self.gaps;
        match self.lost.load(Ordering::Relaxed) + gaps {
            0 => Ok(()),
            lost => Err(Missed::Lagged(lost)),
        }
    }
}

impl Drop for Tap {
    fn drop(&mut self) {
        let bus = self.bus.clone();
        let mut state = bus.state();
        self.unroute(&mut state);
        drop(state);
        self.bus.taps.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use prost::Message;

    use super::*;
    use crate::domain::{NewUser, UserId};

    fn user(name: &str) -> User {
        NewUser::parse(pb::CreateUserRequest {
            name: name.into(),
            email: format!("{name}@example.com"),
            role: pb::UserRole::Viewer as i32,
            bio: None,
            ..Default::default()
        })
        .unwrap()
        .into_user(UserId::generate(), 0)
    }

    /// What a watcher sends as it is must be what prost would have
    /// encoded from the message, defaults left out included.
    #[test]
    fn an_event_is_encoded_as_prost_encodes_its_message() {
        let cases = [
            Event::of(7, EventKind::Updated, &user("ann"), 1_700_000_000_123),
            Event::of(u64::MAX, EventKind::Deleted, &user("bob"), -5),
            Event::new(300, EventKind::Created, String::new(), &[], 0),
            Event::new(1, EventKind::Created, "x".repeat(200), &[9; 300], 1),
        ];
        for event in cases {
            let message = pb::UserEvent::from(&event);
            assert_eq!(event.wire, message.encode_to_vec(), "{event:?}");
            assert_eq!(pb::UserEvent::decode(event.wire.clone()).unwrap(), message);
        }
    }

    #[test]
    fn unwatched_changes_still_take_their_place_in_the_order() {
        let bus = EventBus::new(8);
        bus.publish(1, EventKind::Created, &user("first"));
        bus.publish(2, EventKind::Created, &user("second"));
        assert_eq!(bus.last_seq(), 2, "nobody watched, yet both were numbered");

        let mut watcher = bus.tap();
        watcher.follow_all();
        let third = user("third");
        bus.publish(3, EventKind::Updated, &third);
        let event = watcher.try_recv().unwrap();
        assert_eq!((event.seq, event.kind), (3, EventKind::Updated));
        assert_eq!(event.user_id, third.id.as_str());
        assert_eq!(
            pb::User::decode(event.payload.clone()).unwrap().name,
            "third"
        );
        assert!(watcher.try_recv().is_err(), "nothing from before it joined");
    }

    #[test]
    fn a_watcher_of_some_users_gets_theirs_alone_and_in_order() {
        let bus = EventBus::new(8);
        let (followed, other) = (user("followed"), user("other"));
        let mut watcher = bus.tap();
        let after = watcher.follow(followed.id.as_str());
        bus.publish(after + 1, EventKind::Created, &other);
        bus.publish(after + 2, EventKind::Created, &followed);
        bus.publish(after + 3, EventKind::Updated, &other);
        bus.publish(after + 4, EventKind::Updated, &followed);
        let first = watcher.try_recv().unwrap();
        let second = watcher.try_recv().unwrap();
        assert_eq!(
            [(first.seq, first.kind), (second.seq, second.kind)],
            [
                (after + 2, EventKind::Created),
                (after + 4, EventKind::Updated)
            ]
        );
        assert_eq!(watcher.try_recv().unwrap_err(), Missed::Empty);

        // Following everyone later: what was routed comes first, then the ring.
        let all_after = watcher.follow_all();
        bus.publish(all_after + 1, EventKind::Deleted, &other);
        let next = watcher.try_recv().unwrap();
        assert_eq!((next.seq, next.kind), (all_after + 1, EventKind::Deleted));
    }

    #[test]
    fn a_watcher_of_some_users_that_falls_behind_is_told() {
        let bus = EventBus::new(2);
        let followed = user("followed");
        let mut watcher = bus.tap();
        watcher.follow(followed.id.as_str());
        for seq in 1..=5 {
            bus.publish(seq, EventKind::Updated, &followed);
        }
        assert_eq!(watcher.try_recv().unwrap_err(), Missed::Lagged(3));
    }

    #[test]
    fn changes_the_bus_never_saw_end_its_watchers_not_later_ones() {
        let bus = EventBus::new(8);
        let mut before = bus.tap();
        before.follow_all();
        let mut opened_before = bus.tap();
        bus.lost(3);
        // One opened before the loss that follows after it lost nothing.
        assert_eq!(opened_before.follow_all(), 3, "it starts after the loss");
        let mut after = bus.tap();
        after.follow_all();
        bus.publish(5, EventKind::Created, &user("next"));
        assert_eq!(before.try_recv().unwrap_err(), Missed::Lagged(3));
        assert_eq!(after.try_recv().unwrap().seq, 5);
        assert_eq!(opened_before.try_recv().unwrap().seq, 5);
    }

    #[test]
    fn a_dropped_watcher_leaves_no_route_behind() {
        let bus = EventBus::new(2);
        let followed = user("followed");
        let mut watcher = bus.tap();
        watcher.follow(followed.id.as_str());
        assert_eq!(bus.watchers(), 1);
        drop(watcher);
        assert_eq!(bus.watchers(), 0);
        assert!(bus.state().routes.is_empty());
    }
}
