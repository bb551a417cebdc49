//! A stock tonic-build server for the contract, as a competent engineer
//! would write it in an afternoon, with the semantics of usersvc's memory
//! store where the benchmarks look: GetUser from a HashMap, ListUsers from
//! a Vec, CreateUser and BulkCreateUsers with UUIDv7 ids and unique
//! lower-cased emails, a bulk creation all or nothing, and WatchUserEvents
//! for `*` from a `tokio::sync::broadcast` channel that CreateUser
//! publishes to. No auth, logging, metrics or limits: what usersvc's layers
//! cost is measured against it.
//!
//! Usage: stock-tonic (prints `PORT <n>` once it listens on 127.0.0.1).

use std::collections::{HashMap, HashSet};
use std::pin::Pin;
use std::sync::RwLock;

use prost::Message;
use tokio::sync::broadcast;
use tokio_stream::wrappers::BroadcastStream;
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status, Streaming};

pub mod pb {
    tonic::include_proto!("techoral.users.v1");
}

use pb::user_service_server::{UserService, UserServiceServer};

struct Directory {
    users: RwLock<Users>,
    /// Every creation, for every watcher.
    events: broadcast::Sender<pb::UserEvent>,
}

impl Default for Directory {
    fn default() -> Self {
        Self {
            users: RwLock::default(),
            events: broadcast::channel(65536).0,
        }
    }
}

#[derive(Default)]
struct Users {
    by_id: HashMap<String, pb::User>,
    in_order: Vec<pb::User>,
    emails: HashSet<String>,
}

fn now_millis() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

fn new_user(request: pb::CreateUserRequest) -> pb::User {
    let id = uuid::Uuid::now_v7();
    let created_at = now();
    pb::User {
        // A version tag of the same size as usersvc's etag.
        etag: format!("{:016x}", id.as_u64_pair().1),
        id: id.to_string(),
        name: request.name,
        email: request.email.to_lowercase(),
        role: request.role,
        created_at,
        bio: request.bio,
        updated_at: created_at,
        labels: request.labels,
    }
}

impl Users {
    fn insert(&mut self, user: pb::User) {
        self.emails.insert(user.email.clone());
        self.by_id.insert(user.id.clone(), user.clone());
        self.in_order.push(user);
    }
}

#[tonic::async_trait]
impl UserService for Directory {
    async fn get_user(
        &self,
        request: Request<pb::GetUserRequest>,
    ) -> Result<Response<pb::GetUserResponse>, Status> {
        let users = self.users.read().unwrap();
        match users.by_id.get(&request.get_ref().user_id) {
            Some(user) => Ok(Response::new(pb::GetUserResponse {
                user: Some(user.clone()),
            })),
            None => Err(Status::not_found("user not found")),
        }
    }

    async fn create_user(
        &self,
        request: Request<pb::CreateUserRequest>,
    ) -> Result<Response<pb::User>, Status> {
        let user = new_user(request.into_inner());
        let mut users = self.users.write().unwrap();
        if users.emails.contains(&user.email) {
            return Err(Status::already_exists("email taken"));
        }
        users.insert(user.clone());
        drop(users);
        if self.events.receiver_count() > 0 {
            let _ = self.events.send(pb::UserEvent {
                event_type: "user_created".into(),
                user_id: user.id.clone(),
                payload: user.encode_to_vec(),
                timestamp: now_millis(),
                sequence: 0,
            });
        }
        Ok(Response::new(user))
    }

    type ListUsersStream = tokio_stream::Iter<std::vec::IntoIter<Result<pb::User, Status>>>;
    async fn list_users(
        &self,
        request: Request<pb::ListUsersRequest>,
    ) -> Result<Response<Self::ListUsersStream>, Status> {
        let request = request.into_inner();
        let users = self.users.read().unwrap();
        let limit = if request.limit > 0 {
            request.limit as usize
        } else {
            usize::MAX
        };
        let page: Vec<_> = users
            .in_order
            .iter()
            .skip(request.offset.max(0) as usize)
            .take(limit)
            .cloned()
            .map(Ok)
            .collect();
        Ok(Response::new(tokio_stream::iter(page)))
    }

    async fn bulk_create_users(
        &self,
        request: Request<Streaming<pb::CreateUserRequest>>,
    ) -> Result<Response<pb::ListUsersResponse>, Status> {
        let mut stream = request.into_inner();
        let mut created = Vec::new();
        while let Some(item) = stream.next().await {
            created.push(new_user(item?));
        }
        let mut users = self.users.write().unwrap();
        let mut seen = HashSet::with_capacity(created.len());
        for user in &created {
            if users.emails.contains(&user.email) || !seen.insert(user.email.as_str()) {
                return Err(Status::already_exists(format!("{} is taken", user.email)));
            }
        }
        for user in &created {
            users.insert(user.clone());
        }
        Ok(Response::new(pb::ListUsersResponse {
            total_count: created.len() as i32,
            users: created,
        }))
    }

    /// Everyone's creations after the first request, which must name `*`;
    /// a watcher that falls behind skips what it lost.
    type WatchUserEventsStream =
        Pin<Box<dyn Stream<Item = Result<pb::UserEvent, Status>> + Send + 'static>>;
    async fn watch_user_events(
        &self,
        request: Request<Streaming<pb::EventStreamRequest>>,
    ) -> Result<Response<Self::WatchUserEventsStream>, Status> {
        let mut requests = request.into_inner();
        let first = requests
            .message()
            .await?
            .ok_or_else(|| Status::invalid_argument("no subscription"))?;
        if first.user_id != "*" {
            return Err(Status::unimplemented("the peer watches only *"));
        }
        let events = BroadcastStream::new(self.events.subscribe()).filter_map(Result::ok);
        let subscribed = pb::UserEvent {
            event_type: "subscribed".into(),
            user_id: "*".into(),
            timestamp: now_millis(),
            ..Default::default()
        };
        // The request stream is kept open while the events flow.
        let stream = tokio_stream::once(subscribed)
            .chain(events)
            .map(Ok)
            .map(move |event| {
                let _ = &requests;
                event
            });
        Ok(Response::new(Box::pin(stream)))
    }

    async fn update_user(
        &self,
        _request: Request<pb::UpdateUserRequest>,
    ) -> Result<Response<pb::User>, Status> {
        Err(Status::unimplemented("not in the peer"))
    }

    type SubscribeUserEventsStream = tokio_stream::Empty<Result<pb::UserEvent, Status>>;
    async fn subscribe_user_events(
        &self,
        _request: Request<pb::SubscribeUserEventsRequest>,
    ) -> Result<Response<Self::SubscribeUserEventsStream>, Status> {
        Err(Status::unimplemented("not in the peer"))
    }

    async fn delete_user(
        &self,
        _request: Request<pb::DeleteUserRequest>,
    ) -> Result<Response<pb::DeleteUserResponse>, Status> {
        Err(Status::unimplemented("not in the peer"))
    }

    async fn search_users(
        &self,
        _request: Request<pb::SearchUsersRequest>,
    ) -> Result<Response<pb::SearchUsersResponse>, Status> {
        Err(Status::unimplemented("not in the peer"))
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    println!("PORT {}", listener.local_addr()?.port());
    let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
    tonic::transport::Server::builder()
        .add_service(UserServiceServer::new(Directory::default()))
        .serve_with_incoming(incoming)
        .await?;
    Ok(())
}
