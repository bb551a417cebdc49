//! The event bus behind WatchUserEvents: every committed change, fanned out
//! to every watcher in this process.
//!
//! It is a `tokio::sync::broadcast` channel, so a publisher never waits for a
//! watcher. Each watcher reads at its own pace from a shared ring of the last
//! `capacity` events; one that falls further behind than that loses its place
//! and is told so (`Lagged`), which the service turns into RESOURCE_EXHAUSTED.
//! Events carry a sequence number, so that a subscription made mid-stream
//! sees exactly the changes that come after it.

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use prost::Message;
use tokio::sync::broadcast;

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
    /// Position in this bus's order; increases by one per event.
    pub seq: u64,
    pub kind: EventKind,
    pub user_id: String,
    /// The encoded `User`, encoded once for every watcher.
    pub payload: Bytes,
    /// Unix milliseconds.
    pub timestamp: i64,
}

impl From<&Event> for pb::UserEvent {
    fn from(event: &Event) -> Self {
        pb::UserEvent {
            event_type: event.kind.as_str().to_owned(),
            user_id: event.user_id.clone(),
            payload: event.payload.clone(),
            timestamp: event.timestamp,
        }
    }
}

/// Publishes changes to every current subscriber.
#[derive(Clone, Debug)]
pub struct EventBus {
    sender: broadcast::Sender<Arc<Event>>,
    /// The last sequence number given out. Held while sending, so that the
    /// channel's order and the sequence agree.
    last_seq: Arc<Mutex<u64>>,
}

impl EventBus {
    /// A bus that keeps the last `capacity` events for slow watchers.
    pub fn new(capacity: usize) -> Self {
        let (sender, _) = broadcast::channel(capacity.max(1));
        Self {
            sender,
            last_seq: Arc::new(Mutex::new(0)),
        }
    }

    /// Announces a change made now. Never blocks on watchers.
    ///
    /// With nobody watching, only the sequence number moves: encoding the
    /// user for no one was a tenth of a bulk creation's time. A watcher
    /// that joins meanwhile loses nothing, since it reads the sequence
    /// number, which is already past this change, only after joining.
    pub fn publish(&self, kind: EventKind, user: &User) {
        if self.sender.receiver_count() == 0 {
            let mut last_seq = self.last_seq.lock().unwrap_or_else(|p| p.into_inner());
            if self.sender.receiver_count() == 0 {
                *last_seq += 1;
                return;
            }
        }
        let user_id = user.id.as_str().to_owned();
        let payload = Bytes::from(pb::User::from(user.clone()).encode_to_vec());
        self.publish_encoded(kind, user_id, payload, clock::unix_millis());
    }

    /// Announces a change whose user is already encoded, as an outbox row
    /// written by another replica is.
    pub fn publish_encoded(
        &self,
        kind: EventKind,
        user_id: String,
        payload: Bytes,
        timestamp: i64,
    ) {
        let mut last_seq = self.last_seq.lock().unwrap_or_else(|p| p.into_inner());
        *last_seq += 1;
        let event = Event {
            seq: *last_seq,
            kind,
            user_id,
            payload,
            timestamp,
        };
        // An error only means nobody is watching.
        let _ = self.sender.send(Arc::new(event));
    }

    /// A receiver of every event published from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Event>> {
        self.sender.subscribe()
    }

    /// The sequence number of the last event published.
    pub fn last_seq(&self) -> u64 {
        *self.last_seq.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// How many receivers are open: one per open watch stream.
    pub fn watchers(&self) -> usize {
        self.sender.receiver_count()
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
        })
        .unwrap()
        .into_user(UserId::generate(), 0)
    }

    #[test]
    fn unwatched_changes_still_take_their_place_in_the_order() {
        let bus = EventBus::new(8);
        bus.publish(EventKind::Created, &user("first"));
        bus.publish(EventKind::Created, &user("second"));
        assert_eq!(bus.last_seq(), 2, "nobody watched, yet both were numbered");

        let mut watcher = bus.subscribe();
        let third = user("third");
        bus.publish(EventKind::Updated, &third);
        let event = watcher.try_recv().unwrap();
        assert_eq!((event.seq, event.kind), (3, EventKind::Updated));
        assert_eq!(event.user_id, third.id.as_str());
        assert_eq!(
            pb::User::decode(event.payload.clone()).unwrap().name,
            "third"
        );
        assert!(watcher.try_recv().is_err(), "nothing from before it joined");
    }
}
