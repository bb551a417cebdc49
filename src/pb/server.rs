//! The `UserService` server, written by hand in the shape tonic-build emits:
//! a service trait, and `UserServiceServer<T>`, a `tower::Service` that routes
//! `/techoral.users.v1.UserService/<Method>` to it over the prost codec.
//!
//! Where generated code spells out one adapter struct per method, this file
//! hands `tonic::server::Grpc` a `tower::service_fn`, which tonic accepts as
//! any of its four service kinds. The routing table is the only per-method code,
//! and it matches on [`Method`], so it names every method of `pb::METHODS`.

use std::sync::Arc;
use std::task::{Context, Poll};

use tonic::codegen::{BoxFuture, CompressionEncoding, EnabledCompressionEncodings, Service};
use tonic::codegen::{http, tokio_stream::Stream};
use tonic::server::{Grpc, NamedService};
use tonic::{Request, Response, Status, Streaming};
use tonic_prost::ProstCodec;

use super::encoded::{Outgoing, OutgoingCodec};
use super::{
    CreateUserRequest, DeleteUserRequest, DeleteUserResponse, EventStreamRequest, GetUserRequest,
    GetUserResponse, ListUsersRequest, ListUsersResponse, Method, SearchUsersRequest,
    SearchUsersResponse, SubscribeUserEventsRequest, UpdateUserRequest, User, UserEvent,
};

/// The RPCs of `techoral.users.v1.UserService`, in the .proto's order.
#[tonic::async_trait]
pub trait UserService: Send + Sync + 'static {
    async fn get_user(
        &self,
        request: Request<GetUserRequest>,
    ) -> Result<Response<GetUserResponse>, Status>;
    async fn create_user(
        &self,
        request: Request<CreateUserRequest>,
    ) -> Result<Response<User>, Status>;

    /// The stream ListUsers answers with. Its users may come encoded
    /// already (see `pb::encoded`), straight from the stored ones.
    type ListUsersStream: Stream<Item = Result<Outgoing<User>, Status>> + Send + 'static;
    async fn list_users(
        &self,
        request: Request<ListUsersRequest>,
    ) -> Result<Response<Self::ListUsersStream>, Status>;

    async fn bulk_create_users(
        &self,
        request: Request<Streaming<CreateUserRequest>>,
    ) -> Result<Response<ListUsersResponse>, Status>;

    /// The stream WatchUserEvents answers with. Its events may come encoded
    /// already (see `pb::encoded`): one change goes to every watcher.
    type WatchUserEventsStream: Stream<Item = Result<Outgoing<UserEvent>, Status>> + Send + 'static;
    async fn watch_user_events(
        &self,
        request: Request<Streaming<EventStreamRequest>>,
    ) -> Result<Response<Self::WatchUserEventsStream>, Status>;

    async fn update_user(
        &self,
        request: Request<UpdateUserRequest>,
    ) -> Result<Response<User>, Status>;
    async fn delete_user(
        &self,
        request: Request<DeleteUserRequest>,
    ) -> Result<Response<DeleteUserResponse>, Status>;

    /// The stream SubscribeUserEvents answers with, as WatchUserEvents'.
    type SubscribeUserEventsStream: Stream<Item = Result<Outgoing<UserEvent>, Status>>
        + Send
        + 'static;
    async fn subscribe_user_events(
        &self,
        request: Request<SubscribeUserEventsRequest>,
    ) -> Result<Response<Self::SubscribeUserEventsStream>, Status>;

    async fn search_users(
        &self,
        request: Request<SearchUsersRequest>,
    ) -> Result<Response<SearchUsersResponse>, Status>;
}

/// Serves a [`UserService`] implementation over HTTP/2.
#[derive(Debug)]
pub struct UserServiceServer<T> {
    inner: Arc<T>,
    accept_compression_encodings: EnabledCompressionEncodings,
    send_compression_encodings: EnabledCompressionEncodings,
    max_decoding_message_size: Option<usize>,
    max_encoding_message_size: Option<usize>,
}

impl<T> UserServiceServer<T> {
    pub fn new(inner: T) -> Self {
        Self::from_arc(Arc::new(inner))
    }

    pub fn from_arc(inner: Arc<T>) -> Self {
        Self {
            inner,
            accept_compression_encodings: Default::default(),
            send_compression_encodings: Default::default(),
            max_decoding_message_size: None,
            max_encoding_message_size: None,
        }
    }

    /// Accepts requests compressed with `encoding`.
    #[must_use]
    pub fn accept_compressed(mut self, encoding: CompressionEncoding) -> Self {
        self.accept_compression_encodings.enable(encoding);
        self
    }

    /// Compresses responses with `encoding` when the client accepts it.
    #[must_use]
    pub fn send_compressed(mut self, encoding: CompressionEncoding) -> Self {
        self.send_compression_encodings.enable(encoding);
        self
    }

    /// Largest decoded request message; tonic's default is 4 MiB.
    #[must_use]
    pub fn max_decoding_message_size(mut self, limit: usize) -> Self {
        self.max_decoding_message_size = Some(limit);
        self
    }

    /// Largest encoded response message; tonic's default is unlimited.
    #[must_use]
    pub fn max_encoding_message_size(mut self, limit: usize) -> Self {
        self.max_encoding_message_size = Some(limit);
        self
    }

    /// A `Grpc` handler carrying this server's codec settings, for one call.
    fn grpc<Req, Res>(&self) -> Grpc<ProstCodec<Res, Req>>
    where
        Req: prost::Message + Default + Send + 'static,
        Res: prost::Message + Send + 'static,
    {
        self.grpc_with(ProstCodec::default())
    }

    /// The same, over another codec: events' [`OutgoingCodec`].
    fn grpc_with<C: tonic::codec::Codec>(&self, codec: C) -> Grpc<C> {
        Grpc::new(codec)
            .apply_compression_config(
                self.accept_compression_encodings,
                self.send_compression_encodings,
            )
            .apply_max_message_size_config(
                self.max_decoding_message_size,
                self.max_encoding_message_size,
            )
    }
}

impl<T> Clone for UserServiceServer<T> {
    fn clone(&self) -> Self {
        Self {
            inner: Arc::clone(&self.inner),
            accept_compression_encodings: self.accept_compression_encodings,
            send_compression_encodings: self.send_compression_encodings,
            max_decoding_message_size: self.max_decoding_message_size,
            max_encoding_message_size: self.max_encoding_message_size,
        }
    }
}

impl<T> NamedService for UserServiceServer<T> {
    const NAME: &'static str = super::SERVICE_NAME;
}

/// Routes one call on a method path to the handler kind its RPC has.
///
/// Each arm gives the handler as `|service, request| service.method(request)`,
/// a plain fn that borrows nothing, so that the call owns its `Arc` clone.
macro_rules! route {
    ($self:ident, $req:ident, $kind:ident, $handler:expr) => {
        route!($self, $req, $kind, $handler, $self.grpc())
    };
    ($self:ident, $req:ident, $kind:ident, $handler:expr, $grpc:expr) => {{
        let mut grpc = $grpc;
        let inner = Arc::clone(&$self.inner);
        let method = tower::service_fn(move |request| {
            let inner = Arc::clone(&inner);
            async move { $handler(&*inner, request).await }
        });
        Box::pin(async move { Ok(grpc.$kind(method, $req).await) })
    }};
}

impl<T, B> Service<http::Request<B>> for UserServiceServer<T>
where
    T: UserService,
    B: http_body::Body + Send + 'static,
    B::Error: Into<tonic::codegen::StdError> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = std::convert::Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        match Method::from_path(req.uri().path()) {
            Some(Method::GetUser) => route!(self, req, unary, T::get_user),
            Some(Method::CreateUser) => route!(self, req, unary, T::create_user),
            Some(Method::ListUsers) => {
                let grpc = self.grpc_with(OutgoingCodec::default());
                route!(self, req, server_streaming, T::list_users, grpc)
            }
            Some(Method::BulkCreateUsers) => {
                route!(self, req, client_streaming, T::bulk_create_users)
            }
            Some(Method::WatchUserEvents) => {
                let grpc = self.grpc_with(OutgoingCodec::default());
                route!(self, req, streaming, T::watch_user_events, grpc)
            }
            Some(Method::UpdateUser) => route!(self, req, unary, T::update_user),
            Some(Method::DeleteUser) => route!(self, req, unary, T::delete_user),
            Some(Method::SubscribeUserEvents) => {
                let grpc = self.grpc_with(OutgoingCodec::default());
                route!(self, req, server_streaming, T::subscribe_user_events, grpc)
            }
            Some(Method::SearchUsers) => route!(self, req, unary, T::search_users),
            None => {
                let path = req.uri().path();
                let status = Status::unimplemented(format!("unknown method {path}"));
                Box::pin(async move { Ok(status.into_http()) })
            }
        }
    }
}
