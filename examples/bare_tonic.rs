//! The tonic peer for `make bench`: the same generated-shape server code as
//! usersvc (`usersvc::pb`), over tonic's defaults, with none of usersvc's
//! layers: no auth, logging, metrics, limits, validation or events. Users are
//! kept in a map; ListUsers streams a Vec. What usersvc gives up against it is
//! the price of its production layers.
//!
//! Usage: bare_tonic (prints `PORT <n>` once it listens on 127.0.0.1).

use std::collections::HashMap;
use std::sync::RwLock;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio_stream::StreamExt;
use tonic::{Request, Response, Status, Streaming};
use usersvc::pb::server::{UserService, UserServiceServer};
use usersvc::pb::{
    CreateUserRequest, DeleteUserRequest, DeleteUserResponse, EventStreamRequest, GetUserRequest,
    GetUserResponse, ListUsersRequest, ListUsersResponse, UpdateUserRequest, User, UserEvent,
};

#[derive(Default)]
struct Users {
    users: RwLock<HashMap<String, User>>,
    next: AtomicU64,
}

impl Users {
    fn insert(&self, request: CreateUserRequest) -> User {
        let user = User {
            id: self.next.fetch_add(1, Ordering::Relaxed).to_string(),
            name: request.name,
            email: request.email,
            role: request.role,
            created_at: 0,
            bio: request.bio,
        };
        self.users
            .write()
            .unwrap()
            .insert(user.id.clone(), user.clone());
        user
    }
}

#[tonic::async_trait]
impl UserService for Users {
    async fn get_user(
        &self,
        request: Request<GetUserRequest>,
    ) -> Result<Response<GetUserResponse>, Status> {
        let users = self.users.read().unwrap();
        match users.get(&request.get_ref().user_id) {
            Some(user) => Ok(Response::new(GetUserResponse {
                user: Some(user.clone()),
            })),
            None => Err(Status::not_found("no such user")),
        }
    }

    async fn create_user(
        &self,
        request: Request<CreateUserRequest>,
    ) -> Result<Response<User>, Status> {
        Ok(Response::new(self.insert(request.into_inner())))
    }

    type ListUsersStream = tokio_stream::Iter<std::vec::IntoIter<Result<User, Status>>>;
    async fn list_users(
        &self,
        _request: Request<ListUsersRequest>,
    ) -> Result<Response<Self::ListUsersStream>, Status> {
        let users: Vec<_> = self
            .users
            .read()
            .unwrap()
            .values()
            .cloned()
            .map(Ok)
            .collect();
        Ok(Response::new(tokio_stream::iter(users)))
    }

    async fn bulk_create_users(
        &self,
        request: Request<Streaming<CreateUserRequest>>,
    ) -> Result<Response<ListUsersResponse>, Status> {
        let mut stream = request.into_inner();
        let mut users = Vec::new();
        while let Some(item) = stream.next().await {
            users.push(self.insert(item?));
        }
        Ok(Response::new(ListUsersResponse {
            total_count: users.len() as i32,
            users,
        }))
    }

    type WatchUserEventsStream = tokio_stream::Empty<Result<UserEvent, Status>>;
    async fn watch_user_events(
        &self,
        _request: Request<Streaming<EventStreamRequest>>,
    ) -> Result<Response<Self::WatchUserEventsStream>, Status> {
        Err(Status::unimplemented("not in the peer"))
    }

    async fn update_user(
        &self,
        _request: Request<UpdateUserRequest>,
    ) -> Result<Response<User>, Status> {
        Err(Status::unimplemented("not in the peer"))
    }

    type SubscribeUserEventsStream = tokio_stream::Empty<Result<UserEvent, Status>>;
    async fn subscribe_user_events(
        &self,
        _request: Request<usersvc::pb::SubscribeUserEventsRequest>,
    ) -> Result<Response<Self::SubscribeUserEventsStream>, Status> {
        Err(Status::unimplemented("not in the peer"))
    }

    async fn delete_user(
        &self,
        _request: Request<DeleteUserRequest>,
    ) -> Result<Response<DeleteUserResponse>, Status> {
        Err(Status::unimplemented("not in the peer"))
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    println!("PORT {}", listener.local_addr()?.port());
    let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
    tonic::transport::Server::builder()
        .add_service(UserServiceServer::new(Users::default()))
        .serve_with_incoming(incoming)
        .await?;
    Ok(())
}
