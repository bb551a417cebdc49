//! Wire types of `techoral.users.v1`, written by hand to mirror
//! `proto/user_service.proto` line for line, in its order and with its names.
//!
//! There is no code generator: put the .proto beside this file and compare.
//! `tests/contract.rs` checks every tag, type, label and presence against the
//! .proto, so a slip here fails a test rather than a client in another language.
//! Nothing but wire types lives here; validation is in `crate::domain`.

pub mod client;
mod encoded;
pub mod server;

pub use encoded::{Outgoing, OutgoingCodec};

/// The service's full name, written once for the consts below.
macro_rules! service_name {
    () => {
        "techoral.users.v1.UserService"
    };
}

/// The full name of the service, as it appears in every method path.
pub const SERVICE_NAME: &str = service_name!();

/// The metadata key that makes a CreateUser safe to retry (see the .proto).
pub const IDEMPOTENCY_KEY: &str = "idempotency-key";

/// How a method's messages flow.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MethodKind {
    Unary,
    ServerStreaming,
    ClientStreaming,
    BidiStreaming,
}

/// One row of [`METHODS`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MethodInfo {
    pub method: Method,
    /// As in the .proto: `GetUser`.
    pub name: &'static str,
    /// As on the wire: `/techoral.users.v1.UserService/GetUser`.
    pub path: &'static str,
    pub kind: MethodKind,
}

/// Declares [`Method`] and [`METHODS`] from one list, so that the two
/// cannot disagree.
macro_rules! methods {
    ($($method:ident: $kind:ident,)*) => {
        /// The RPCs of `UserService`, in the .proto's order. Whatever must
        /// know every method (the router, the permission table) matches on
        /// this enum, so a new method does not compile until each has
        /// decided what to do with it.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum Method {
            $($method,)*
        }

        /// Every method of `UserService`: the one table of names, paths and
        /// kinds that the router, the client, the permission table, the
        /// rate limit and the metrics read.
        pub const METHODS: &[MethodInfo] = &[
            $(MethodInfo {
                method: Method::$method,
                name: stringify!($method),
                path: concat!("/", service_name!(), "/", stringify!($method)),
                kind: MethodKind::$kind,
            },)*
        ];
    };
}

methods! {
    GetUser: Unary,
    CreateUser: Unary,
    ListUsers: ServerStreaming,
    BulkCreateUsers: ClientStreaming,
    WatchUserEvents: BidiStreaming,
    UpdateUser: Unary,
    DeleteUser: Unary,
    SubscribeUserEvents: ServerStreaming,
    SearchUsers: Unary,
}

impl Method {
    /// The method's row in [`METHODS`].
    pub fn info(self) -> &'static MethodInfo {
        &METHODS[self as usize]
    }

    pub fn name(self) -> &'static str {
        self.info().name
    }

    pub fn path(self) -> &'static str {
        self.info().path
    }

    pub fn kind(self) -> MethodKind {
        self.info().kind
    }

    /// The method served at `path`; `None` for any other path.
    pub fn from_path(path: &str) -> Option<Method> {
        METHODS.iter().find(|m| m.path == path).map(|m| m.method)
    }

    /// The method called `name` in the .proto.
    pub fn from_name(name: &str) -> Option<Method> {
        METHODS.iter().find(|m| m.name == name).map(|m| m.method)
    }
}

/// What a user may do. Carried on the wire as its number.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, ::prost::Enumeration)]
#[repr(i32)]
pub enum UserRole {
    Unspecified = 0,
    Admin = 1,
    Editor = 2,
    Viewer = 3,
}

impl UserRole {
    /// The value's name in the .proto.
    pub fn as_str_name(&self) -> &'static str {
        match self {
            Self::Unspecified => "USER_ROLE_UNSPECIFIED",
            Self::Admin => "USER_ROLE_ADMIN",
            Self::Editor => "USER_ROLE_EDITOR",
            Self::Viewer => "USER_ROLE_VIEWER",
        }
    }

    /// The value named `value` in the .proto, exactly as spelled there.
    pub fn from_str_name(value: &str) -> Option<Self> {
        match value {
            "USER_ROLE_UNSPECIFIED" => Some(Self::Unspecified),
            "USER_ROLE_ADMIN" => Some(Self::Admin),
            "USER_ROLE_EDITOR" => Some(Self::Editor),
            "USER_ROLE_VIEWER" => Some(Self::Viewer),
            _ => None,
        }
    }
}

/// A user as stored.
#[derive(Clone, PartialEq, ::prost::Message)]
pub struct User {
    #[prost(string, tag = "1")]
    pub id: String,
    #[prost(string, tag = "2")]
    pub name: String,
    #[prost(string, tag = "3")]
    pub email: String,
    #[prost(enumeration = "UserRole", tag = "4")]
    pub role: i32,
    #[prost(int64, tag = "5")]
    pub created_at: i64,
    #[prost(string, optional, tag = "6")]
    pub bio: Option<String>,
    #[prost(int64, tag = "7")]
    pub updated_at: i64,
    #[prost(string, tag = "8")]
    pub etag: String,
    /// A `BTreeMap`, so that a user always encodes to the same bytes.
    #[prost(btree_map = "string, string", tag = "9")]
    pub labels: ::std::collections::BTreeMap<String, String>,
}

/// GetUser's request.
#[derive(Clone, PartialEq, ::prost::Message)]
pub struct GetUserRequest {
    #[prost(string, tag = "1")]
    pub user_id: String,
}
/// GetUser's response.
#[derive(Clone, PartialEq, ::prost::Message)]
pub struct GetUserResponse {
    #[prost(message, optional, tag = "1")]
    pub user: Option<User>,
}

/// ListUsers' request.
#[derive(Clone, PartialEq, ::prost::Message)]
pub struct ListUsersRequest {
    #[prost(int32, tag = "1")]
    pub limit: i32,
    #[prost(int32, tag = "2")]
    pub offset: i32,
    #[prost(string, tag = "3")]
    pub filter_role: String,
    #[prost(string, tag = "4")]
    pub filter: String,
    #[prost(string, tag = "5")]
    pub order_by: String,
}
/// BulkCreateUsers' response (the name is kept from the original contract).
#[derive(Clone, PartialEq, ::prost::Message)]
pub struct ListUsersResponse {
    #[prost(message, repeated, tag = "1")]
    pub users: Vec<User>,
    #[prost(int32, tag = "2")]
    pub total_count: i32,
}

/// CreateUser's request, and one item of BulkCreateUsers' stream.
#[derive(Clone, PartialEq, ::prost::Message)]
pub struct CreateUserRequest {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(string, tag = "2")]
    pub email: String,
    #[prost(enumeration = "UserRole", tag = "3")]
    pub role: i32,
    #[prost(string, optional, tag = "4")]
    pub bio: Option<String>,
    #[prost(btree_map = "string, string", tag = "5")]
    pub labels: ::std::collections::BTreeMap<String, String>,
}

/// UpdateUser's request. Only the fields that are present change.
#[derive(Clone, PartialEq, ::prost::Message)]
pub struct UpdateUserRequest {
    #[prost(string, tag = "1")]
    pub user_id: String,
    #[prost(string, optional, tag = "2")]
    pub name: Option<String>,
    #[prost(string, optional, tag = "3")]
    pub email: Option<String>,
    #[prost(enumeration = "UserRole", optional, tag = "4")]
    pub role: Option<i32>,
    #[prost(string, optional, tag = "5")]
    pub bio: Option<String>,
    #[prost(string, tag = "6")]
    pub etag: String,
    #[prost(btree_map = "string, string", tag = "7")]
    pub set_labels: ::std::collections::BTreeMap<String, String>,
    #[prost(string, repeated, tag = "8")]
    pub remove_labels: Vec<String>,
}

/// DeleteUser's request.
#[derive(Clone, PartialEq, ::prost::Message)]
pub struct DeleteUserRequest {
    #[prost(string, tag = "1")]
    pub user_id: String,
    #[prost(string, tag = "2")]
    pub etag: String,
}
/// DeleteUser's response.
#[derive(Clone, PartialEq, ::prost::Message)]
pub struct DeleteUserResponse {
    #[prost(message, optional, tag = "1")]
    pub user: Option<User>,
}

/// One subscription on the WatchUserEvents stream.
#[derive(Clone, PartialEq, ::prost::Message)]
pub struct EventStreamRequest {
    #[prost(string, tag = "1")]
    pub user_id: String,
    #[prost(int64, tag = "2")]
    pub resume_after: i64,
}
/// One event on the WatchUserEvents stream.
#[derive(Clone, PartialEq, ::prost::Message)]
pub struct UserEvent {
    #[prost(string, tag = "1")]
    pub event_type: String,
    #[prost(string, tag = "2")]
    pub user_id: String,
    /// `Bytes`, not `Vec<u8>`: one encoded user is shared by every watcher.
    #[prost(bytes = "bytes", tag = "3")]
    pub payload: ::prost::bytes::Bytes,
    #[prost(int64, tag = "4")]
    pub timestamp: i64,
    #[prost(int64, tag = "5")]
    pub sequence: i64,
}
/// The subscriptions of one SubscribeUserEvents stream, all at once.
#[derive(Clone, PartialEq, ::prost::Message)]
pub struct SubscribeUserEventsRequest {
    #[prost(string, repeated, tag = "1")]
    pub user_ids: Vec<String>,
    #[prost(int64, tag = "2")]
    pub resume_after: i64,
}

/// SearchUsers' request.
#[derive(Clone, PartialEq, ::prost::Message)]
pub struct SearchUsersRequest {
    #[prost(string, tag = "1")]
    pub filter: String,
    #[prost(string, tag = "2")]
    pub order_by: String,
    #[prost(int32, tag = "3")]
    pub page_size: i32,
    #[prost(string, tag = "4")]
    pub page_token: String,
}
/// SearchUsers' response.
#[derive(Clone, PartialEq, ::prost::Message)]
pub struct SearchUsersResponse {
    #[prost(message, repeated, tag = "1")]
    pub users: Vec<User>,
    #[prost(string, tag = "2")]
    pub next_page_token: String,
    #[prost(int32, tag = "3")]
    pub total_size: i32,
    #[prost(int64, tag = "4")]
    pub sequence: i64,
}
