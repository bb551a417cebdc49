//! What the fuzz targets do with their bytes. Shared, by `#[path]`, by the
//! targets in `fuzz_targets/` and by `tests/it/fuzzing.rs`, which replays
//! the committed corpus on every `make test`, in process and against a real
//! `usersvc serve`.
//!
//! Two targets:
//! - `decode`: the first byte picks a request message, the rest is decoded
//!   as it. A message that decodes must encode to bytes that decode to the
//!   same message.
//! - `service`: the bytes become one call of one method ([`Case`]), sent
//!   through the service as a client would send it; every call must end
//!   with a gRPC status, and a first message that does not parse with
//!   INTERNAL, as the gRPC spec says. A panic, a hang or an answer with no
//!   status is a finding.

#![allow(dead_code)] // Each includer uses its part.

use std::fmt::Debug;

use bytes::{BufMut, Bytes, BytesMut};
use prost::Message;
use usersvc::pb::{self, METHODS, Method, MethodKind};

/// Decodes `data[1..]` as the request message that `data[0]` picks.
pub fn decode(data: &[u8]) {
    let Some((&pick, bytes)) = data.split_first() else {
        return;
    };
    let method = METHODS[usize::from(pick) % METHODS.len()].method;
    match method {
        Method::GetUser => round_trip::<pb::GetUserRequest>(bytes),
        Method::CreateUser | Method::BulkCreateUsers => round_trip::<pb::CreateUserRequest>(bytes),
        Method::ListUsers => round_trip::<pb::ListUsersRequest>(bytes),
        Method::WatchUserEvents => round_trip::<pb::EventStreamRequest>(bytes),
        Method::UpdateUser => round_trip::<pb::UpdateUserRequest>(bytes),
        Method::DeleteUser => round_trip::<pb::DeleteUserRequest>(bytes),
        Method::SubscribeUserEvents => round_trip::<pb::SubscribeUserEventsRequest>(bytes),
    }
}

fn round_trip<M: Message + Default + PartialEq + Debug>(bytes: &[u8]) {
    if let Ok(message) = M::decode(bytes) {
        let encoded = message.encode_to_vec();
        let again = M::decode(encoded.as_slice()).expect("a re-encoded message decodes");
        assert_eq!(message, again, "a message survives a round trip");
    }
}

/// Whether `bytes` parse as a request message of `method`.
pub fn parses(method: Method, bytes: &[u8]) -> bool {
    match method {
        Method::GetUser => pb::GetUserRequest::decode(bytes).is_ok(),
        Method::CreateUser | Method::BulkCreateUsers => {
            pb::CreateUserRequest::decode(bytes).is_ok()
        }
        Method::ListUsers => pb::ListUsersRequest::decode(bytes).is_ok(),
        Method::WatchUserEvents => pb::EventStreamRequest::decode(bytes).is_ok(),
        Method::UpdateUser => pb::UpdateUserRequest::decode(bytes).is_ok(),
        Method::DeleteUser => pb::DeleteUserRequest::decode(bytes).is_ok(),
        Method::SubscribeUserEvents => pb::SubscribeUserEventsRequest::decode(bytes).is_ok(),
    }
}

/// One call made of fuzz bytes:
/// - `data[0]` picks the method;
/// - `data[1]`, when odd, sends the rest as the raw request body, which
///   fuzzes the gRPC length-prefixed framing; when even, the rest is a
///   list of messages, each a length byte and that many bytes (the last
///   may be short), and each is sent in a well-formed frame.
pub struct Case {
    pub method: Method,
    pub body: Bytes,
    /// The first message, when the body is well-formed frames.
    first: Option<Option<Vec<u8>>>,
}

impl Case {
    pub fn new(data: &[u8]) -> Option<Case> {
        let [pick, mode, rest @ ..] = data else {
            return None;
        };
        let method = METHODS[usize::from(*pick) % METHODS.len()].method;
        if mode % 2 == 1 {
            return Some(Case {
                method,
                body: Bytes::copy_from_slice(rest),
                first: None,
            });
        }
        let mut body = BytesMut::new();
        let mut messages = Vec::new();
        let mut rest = rest;
        while let [len, tail @ ..] = rest {
            let len = usize::from(*len).min(tail.len());
            let (message, tail) = tail.split_at(len);
            body.put_u8(0);
            body.put_u32(len as u32);
            body.put_slice(message);
            messages.push(message.to_vec());
            rest = tail;
        }
        Some(Case {
            method,
            body: body.freeze(),
            first: Some(messages.into_iter().next()),
        })
    }

    pub fn path(&self) -> &'static str {
        self.method.path()
    }

    /// Checks how the call ended: `status` is its grpc-status, `None` when
    /// it sent none, and `open` says the response was still streaming when
    /// the caller stopped waiting.
    pub fn check(&self, status: Option<i32>, open: bool) {
        if open {
            // Only a watch may stay open after its client half-closes: it
            // goes on sending events while anything is subscribed.
            assert!(
                matches!(
                    self.method,
                    Method::WatchUserEvents | Method::SubscribeUserEvents
                ),
                "{:?} still open: a hang",
                self.method
            );
            return;
        }
        let status =
            status.unwrap_or_else(|| panic!("{:?} ended with no grpc-status", self.method));
        let refused = match &self.first {
            // Unary and server-streaming calls need one message.
            Some(None) => matches!(
                self.method.kind(),
                MethodKind::Unary | MethodKind::ServerStreaming
            ),
            Some(Some(first)) => !parses(self.method, first),
            None => false,
        };
        if refused {
            assert_eq!(
                status,
                tonic::Code::Internal as i32,
                "{:?} with a first message that does not parse",
                self.method
            );
        }
    }
}

/// The service in this process, called as a client would call it, with an
/// admin's identity so that every handler is reached. Time is paused: a
/// wait that nothing can end passes at once, so a hang costs no real time.
pub struct InProcess {
    runtime: tokio::runtime::Runtime,
    service: Option<pb::server::UserServiceServer<usersvc::service::Directory>>,
    stopping: Option<tokio::sync::watch::Sender<bool>>,
    calls: usize,
}

/// Calls served by one store before a fresh one, so that the users
/// created along the way do not add up over millions of runs.
const CALLS_PER_STORE: usize = 10_000;

impl InProcess {
    pub fn new() -> InProcess {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .start_paused(true)
            .build()
            .expect("a runtime");
        InProcess {
            runtime,
            service: None,
            stopping: None,
            calls: 0,
        }
    }

    fn service(&mut self) -> pb::server::UserServiceServer<usersvc::service::Directory> {
        if self.calls.is_multiple_of(CALLS_PER_STORE) || self.service.is_none() {
            let (stopping, stopped) = tokio::sync::watch::channel(false);
            let limits = usersvc::service::Limits::default();
            let max = limits.max_message_bytes;
            let _entered = self.runtime.enter();
            let directory = usersvc::service::Directory::new(
                std::sync::Arc::new(usersvc::store::MemoryStore::new()),
                limits,
                usersvc::auth::RateLimiter::new(None),
                stopped,
            );
            self.service =
                Some(pb::server::UserServiceServer::new(directory).max_decoding_message_size(max));
            self.stopping = Some(stopping);
        }
        self.calls += 1;
        self.service.clone().expect("made above")
    }

    pub fn call(&mut self, data: &[u8]) {
        let Some(case) = Case::new(data) else {
            return;
        };
        let mut service = self.service();
        let (case, status, open) = self.runtime.block_on(async move {
            let mut request = http::Request::post(case.path())
                .header("content-type", "application/grpc")
                .header("te", "trailers")
                .body(http_body_util::Full::new(case.body.clone()))
                .expect("a request");
            request.extensions_mut().insert(admin());
            let response = tower::Service::call(&mut service, request)
                .await
                .expect("infallible");
            let ended = response_status(response);
            let (status, open) = match tokio::time::timeout(WAIT, ended).await {
                Ok(status) => (status, false),
                Err(_) => (None, true),
            };
            (case, status, open)
        });
        case.check(status, open);
    }
}

/// How long a call may take, in paused time: longer than anything the
/// service waits on for a finished request body.
const WAIT: std::time::Duration = std::time::Duration::from_secs(60);

fn admin() -> usersvc::auth::Caller {
    usersvc::auth::Caller {
        peer: None,
        certificate: None,
        claims: Some(std::sync::Arc::new(usersvc::auth::Claims {
            sub: "fuzz".into(),
            role: usersvc::domain::Role::Admin,
            exp: u64::from(u32::MAX),
            iat: None,
            nbf: None,
            iss: None,
            aud: None,
        })),
        forwarded: None,
    }
}

/// The grpc-status of a response: in its headers (a trailers-only answer)
/// or in its trailers, once the body has ended.
pub async fn response_status<B>(response: http::Response<B>) -> Option<i32>
where
    B: http_body::Body + Unpin,
    B::Error: Debug,
{
    use http_body_util::BodyExt;
    let code = |headers: &http::HeaderMap| {
        headers
            .get("grpc-status")?
            .to_str()
            .ok()?
            .parse::<i32>()
            .ok()
    };
    if let Some(code) = code(response.headers()) {
        return Some(code);
    }
    let mut body = response.into_body();
    while let Some(frame) = body.frame().await {
        // A body that breaks off is an answer with no status.
        let Ok(frame) = frame else {
            return None;
        };
        if let Ok(trailers) = frame.into_trailers() {
            return code(&trailers);
        }
    }
    None
}
