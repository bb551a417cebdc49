//! The `UserService` client, written by hand in the shape tonic-build emits:
//! `UserServiceClient<T>` over `tonic::client::Grpc`, one method per RPC.
//!
//! Retries, deadlines and tokens are policy, not wire: they live in
//! `crate::client`, which wraps this type.

use tonic::client::{Grpc, GrpcService};
use tonic::codec::Streaming;
use tonic::codegen::{Body, Bytes, CompressionEncoding, GrpcMethod, StdError, http};
use tonic::transport::Channel;
use tonic::{IntoRequest, IntoStreamingRequest, Request, Response, Status};
use tonic_prost::ProstCodec;

use super::{
    CreateUserRequest, DeleteUserRequest, DeleteUserResponse, EventStreamRequest, GetUserRequest,
    GetUserResponse, ListUsersRequest, ListUsersResponse, Method, SERVICE_NAME, SearchUsersRequest,
    SearchUsersResponse, SubscribeUserEventsRequest, UpdateUserRequest, User, UserEvent,
};

/// Calls a `techoral.users.v1.UserService` server.
#[derive(Debug, Clone)]
pub struct UserServiceClient<T> {
    inner: Grpc<T>,
}

impl UserServiceClient<Channel> {
    /// Connects to `dst`, for example `http://127.0.0.1:50051`.
    pub async fn connect<D>(dst: D) -> Result<Self, tonic::transport::Error>
    where
        D: TryInto<tonic::transport::Endpoint>,
        D::Error: Into<StdError>,
    {
        let conn = tonic::transport::Endpoint::new(dst)?.connect().await?;
        Ok(Self::new(conn))
    }
}

impl<T> UserServiceClient<T>
where
    T: GrpcService<tonic::body::Body>,
    T::Error: Into<StdError>,
    T::ResponseBody: Body<Data = Bytes> + Send + 'static,
    <T::ResponseBody as Body>::Error: Into<StdError> + Send,
{
    pub fn new(inner: T) -> Self {
        Self {
            inner: Grpc::new(inner),
        }
    }

    /// Compresses requests with `encoding`.
    #[must_use]
    pub fn send_compressed(mut self, encoding: CompressionEncoding) -> Self {
        self.inner = self.inner.send_compressed(encoding);
        self
    }

    /// Tells the server it may compress responses with `encoding`.
    #[must_use]
    pub fn accept_compressed(mut self, encoding: CompressionEncoding) -> Self {
        self.inner = self.inner.accept_compressed(encoding);
        self
    }

    /// Largest decoded response message; tonic's default is 4 MiB.
    #[must_use]
    pub fn max_decoding_message_size(mut self, limit: usize) -> Self {
        self.inner = self.inner.max_decoding_message_size(limit);
        self
    }

    /// Largest encoded request message; tonic's default is unlimited.
    #[must_use]
    pub fn max_encoding_message_size(mut self, limit: usize) -> Self {
        self.inner = self.inner.max_encoding_message_size(limit);
        self
    }

    pub async fn get_user(
        &mut self,
        request: impl IntoRequest<GetUserRequest>,
    ) -> Result<Response<GetUserResponse>, Status> {
        let (path, req) = self
            .prepare(Method::GetUser, request.into_request())
            .await?;
        self.inner.unary(req, path, ProstCodec::default()).await
    }

    pub async fn create_user(
        &mut self,
        request: impl IntoRequest<CreateUserRequest>,
    ) -> Result<Response<User>, Status> {
        let (path, req) = self
            .prepare(Method::CreateUser, request.into_request())
            .await?;
        self.inner.unary(req, path, ProstCodec::default()).await
    }

    pub async fn list_users(
        &mut self,
        request: impl IntoRequest<ListUsersRequest>,
    ) -> Result<Response<Streaming<User>>, Status> {
        let (path, req) = self
            .prepare(Method::ListUsers, request.into_request())
            .await?;
        self.inner
            .server_streaming(req, path, ProstCodec::default())
            .await
    }

    pub async fn bulk_create_users(
        &mut self,
        request: impl IntoStreamingRequest<Message = CreateUserRequest>,
    ) -> Result<Response<ListUsersResponse>, Status> {
        let (path, req) = self
            .prepare(Method::BulkCreateUsers, request.into_streaming_request())
            .await?;
        self.inner
            .client_streaming(req, path, ProstCodec::default())
            .await
    }

    pub async fn watch_user_events(
        &mut self,
        request: impl IntoStreamingRequest<Message = EventStreamRequest>,
    ) -> Result<Response<Streaming<UserEvent>>, Status> {
        let (path, req) = self
            .prepare(Method::WatchUserEvents, request.into_streaming_request())
            .await?;
        self.inner.streaming(req, path, ProstCodec::default()).await
    }

    pub async fn update_user(
        &mut self,
        request: impl IntoRequest<UpdateUserRequest>,
    ) -> Result<Response<User>, Status> {
        let (path, req) = self
            .prepare(Method::UpdateUser, request.into_request())
            .await?;
        self.inner.unary(req, path, ProstCodec::default()).await
    }

    pub async fn delete_user(
        &mut self,
        request: impl IntoRequest<DeleteUserRequest>,
    ) -> Result<Response<DeleteUserResponse>, Status> {
        let (path, req) = self
            .prepare(Method::DeleteUser, request.into_request())
            .await?;
        self.inner.unary(req, path, ProstCodec::default()).await
    }

    pub async fn subscribe_user_events(
        &mut self,
        request: impl IntoRequest<SubscribeUserEventsRequest>,
    ) -> Result<Response<Streaming<UserEvent>>, Status> {
        let (path, req) = self
            .prepare(Method::SubscribeUserEvents, request.into_request())
            .await?;
        self.inner
            .server_streaming(req, path, ProstCodec::default())
            .await
    }

    pub async fn search_users(
        &mut self,
        request: impl IntoRequest<SearchUsersRequest>,
    ) -> Result<Response<SearchUsersResponse>, Status> {
        let (path, req) = self
            .prepare(Method::SearchUsers, request.into_request())
            .await?;
        self.inner.unary(req, path, ProstCodec::default()).await
    }

    /// Waits for the channel to be ready, and names the call: its path, and
    /// the `GrpcMethod` extension that tonic's layers read.
    async fn prepare<M>(
        &mut self,
        method: Method,
        mut request: Request<M>,
    ) -> Result<(http::uri::PathAndQuery, Request<M>), Status> {
        self.inner
            .ready()
            .await
            .map_err(|e| Status::unknown(format!("Service was not ready: {}", e.into())))?;
        let path = http::uri::PathAndQuery::from_static(method.path());
        request
            .extensions_mut()
            .insert(GrpcMethod::new(SERVICE_NAME, method.name()));
        Ok((path, request))
    }
}
