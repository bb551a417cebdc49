//! What the fuzz targets do with their bytes. Shared, by `#[path]`, by the
//! targets in `fuzz_targets/` and by `tests/it/fuzzing.rs`, which replays
//! the committed corpus on every `make test`, in process and against a real
//! `usersvc serve`.
//!
//! Two targets:
//! - `decode`: the first byte picks a request message, the rest is decoded
//!   as it. A message that decodes goes through usersvc's own wire → domain
//!   conversion for it (`NewUser::parse` and the others), which must not
//!   panic, and whose refusals must be field violations naming fields of
//!   that message; and it must encode to bytes that decode to itself.
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

/// Decodes `data[1..]` as the request message that `data[0]` picks, and
/// converts it to the domain as the service would.
pub fn decode(data: &[u8]) {
    use usersvc::domain::{ListQuery, NewUser, Subscribe, UserId, UserPatch};
    use usersvc::service::search::SearchQuery;
    let Some((&pick, bytes)) = data.split_first() else {
        return;
    };
    let method = METHODS[usize::from(pick) % METHODS.len()].method;
    match method {
        Method::GetUser => {
            let Some(m) = round_trip::<pb::GetUserRequest>(bytes) else {
                return;
            };
            if let Err(refused) = UserId::parse("user_id", m.user_id) {
                violations(method, std::iter::once(refused.field), &["user_id"]);
            }
        }
        Method::DeleteUser => {
            let Some(m) = round_trip::<pb::DeleteUserRequest>(bytes) else {
                return;
            };
            if let Err(refused) = UserId::parse("user_id", m.user_id) {
                violations(method, std::iter::once(refused.field), &["user_id"]);
            }
        }
        Method::CreateUser | Method::BulkCreateUsers => {
            let Some(m) = round_trip::<pb::CreateUserRequest>(bytes) else {
                return;
            };
            if let Err(refused) = NewUser::parse(m) {
                let fields = refused.iter().map(|v| v.field.clone());
                violations(method, fields, &["name", "email", "role", "bio", "labels"]);
            }
        }
        Method::ListUsers => {
            let Some(m) = round_trip::<pb::ListUsersRequest>(bytes) else {
                return;
            };
            if let Err(refused) = ListQuery::parse(m) {
                let fields = refused.iter().map(|v| v.field.clone());
                violations(
                    method,
                    fields,
                    &["limit", "offset", "filter_role", "filter", "order_by"],
                );
            }
        }
        Method::UpdateUser => {
            let Some(m) = round_trip::<pb::UpdateUserRequest>(bytes) else {
                return;
            };
            if let Err(refused) = UserPatch::parse(m) {
                let fields = refused.iter().map(|v| v.field.clone());
                violations(
                    method,
                    fields,
                    &[
                        "user_id",
                        "name",
                        "email",
                        "role",
                        "bio",
                        "set_labels",
                        "remove_labels",
                    ],
                );
            }
        }
        Method::WatchUserEvents => {
            let Some(m) = round_trip::<pb::EventStreamRequest>(bytes) else {
                return;
            };
            if let Err(refused) = Subscribe::parse(m) {
                violations(
                    method,
                    refused.iter().map(|v| v.field.clone()),
                    &["user_id", "resume_after"],
                );
            }
        }
        Method::SubscribeUserEvents => {
            let Some(m) = round_trip::<pb::SubscribeUserEventsRequest>(bytes) else {
                return;
            };
            if let Err(refused) = Subscribe::parse_all(m, 1000) {
                violations(
                    method,
                    refused.iter().map(|v| v.field.clone()),
                    &["user_ids", "resume_after"],
                );
            }
        }
        Method::SearchUsers => {
            let Some(m) = round_trip::<pb::SearchUsersRequest>(bytes) else {
                return;
            };
            // The filter parser and the page token's decoder see whatever
            // the bytes hold; a search that parses must then open the
            // token the server would issue for its next page.
            let request = m.clone();
            let secret = [42; 32];
            match SearchQuery::parse(m, secret) {
                Err(refused) => violations(
                    method,
                    refused.iter().map(|v| v.field.clone()),
                    &["filter", "order_by", "page_size", "page_token"],
                ),
                Ok(query) => {
                    let last = query.order.key_of(&sample_user());
                    let token = query.token_after(&last);
                    let again = SearchQuery::parse(
                        pb::SearchUsersRequest {
                            page_token: token,
                            ..request.clone()
                        },
                        secret,
                    )
                    .expect("a token issued for a search opens it");
                    assert_eq!(again.after.map(|c| c.0), Some(last));
                }
            }
        }
    }
}

/// A user to make a page token from.
fn sample_user() -> usersvc::domain::User {
    usersvc::domain::NewUser::parse(pb::CreateUserRequest {
        name: "Ada Lovelace".into(),
        email: "ada@example.com".into(),
        ..Default::default()
    })
    .expect("a valid user")
    .into_user(usersvc::domain::UserId::generate(), 1_700_000_000)
}

/// `bytes` as `M`, if they decode, after checking the round trip.
fn round_trip<M: Message + Default + PartialEq + Debug>(bytes: &[u8]) -> Option<M> {
    let message = M::decode(bytes).ok()?;
    let encoded = message.encode_to_vec();
    let again = M::decode(encoded.as_slice()).expect("a re-encoded message decodes");
    assert_eq!(message, again, "a message survives a round trip");
    Some(message)
}

/// A refusal must name at least one field, and only fields of the message
/// (`user_ids[3]` is a field of `user_ids`).
fn violations(method: Method, fields: impl Iterator<Item = String>, known: &[&str]) {
    let mut named = 0;
    for field in fields {
        let base = field.split(['[', '.']).next().unwrap_or_default();
        assert!(
            known.contains(&base),
            "{method:?}: a violation names {field:?}, not a field of the request"
        );
        named += 1;
    }
    assert!(named > 0, "{method:?}: refused with no field violation");
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
        Method::SearchUsers => pb::SearchUsersRequest::decode(bytes).is_ok(),
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

    /// Subscriptions the call asks for: each whole frame of a
    /// WatchUserEvents body, each id of a SubscribeUserEvents request; none
    /// for the other methods.
    pub fn subscriptions(&self) -> usize {
        let mut body = &self.body[..];
        let mut frames = Vec::new();
        while let [_, a, b, c, d, rest @ ..] = body {
            let len = u32::from_be_bytes([*a, *b, *c, *d]) as usize;
            if rest.len() < len {
                break;
            }
            frames.push(&rest[..len]);
            body = &rest[len..];
        }
        match self.method {
            Method::WatchUserEvents => frames.len(),
            Method::SubscribeUserEvents => frames
                .first()
                .and_then(|first| pb::SubscribeUserEventsRequest::decode(*first).ok())
                .map_or(0, |request| request.user_ids.len()),
            _ => 0,
        }
    }

    /// Checks how the call ended, `None` when it had not within the wait:
    /// with a status, INTERNAL for a first message that does not parse; or,
    /// for a watch, still open having confirmed every subscription it was
    /// sent. A watch open without that is a hang like any other.
    pub fn check(&self, outcome: Option<Outcome>) {
        let outcome =
            outcome.unwrap_or_else(|| panic!("{:?}: no end and no answer: a hang", self.method));
        let Some(status) = outcome.status else {
            let subscriptions = self.subscriptions();
            assert!(
                outcome.subscribed > 0 && outcome.subscribed == subscriptions,
                "{:?} ended with no grpc-status ({} of {subscriptions} subscriptions confirmed)",
                self.method,
                outcome.subscribed
            );
            return;
        };
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

/// What a call answered: its grpc-status, if it ended, and how many
/// `subscribed` confirmations it sent.
#[derive(Debug, Default)]
pub struct Outcome {
    pub status: Option<i32>,
    pub subscribed: usize,
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
        let (case, outcome) = self.runtime.block_on(async move {
            let mut request = http::Request::post(case.path())
                .header("content-type", "application/grpc")
                .header("te", "trailers")
                .body(http_body_util::Full::new(case.body.clone()))
                .expect("a request");
            request.extensions_mut().insert(admin());
            let response = tower::Service::call(&mut service, request)
                .await
                .expect("infallible");
            let subscriptions = case.subscriptions();
            let outcome = tokio::time::timeout(WAIT, response_outcome(response, subscriptions))
                .await
                .ok();
            (case, outcome)
        });
        case.check(outcome);
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
            role: Some(usersvc::domain::Role::Admin),
            exp: u64::from(u32::MAX),
            iat: None,
            nbf: None,
            iss: None,
            aud: None,
        })),
        forwarded: None,
    }
}

/// How a response ends: its grpc-status, in its headers (a trailers-only
/// answer) or its trailers; or, once it has confirmed `subscriptions`
/// subscriptions (when there are any), that it is an open watch.
pub async fn response_outcome<B>(response: http::Response<B>, subscriptions: usize) -> Outcome
where
    B: http_body::Body + Unpin,
    B::Data: bytes::Buf,
    B::Error: Debug,
{
    use bytes::Buf;
    use http_body_util::BodyExt;
    let code = |headers: &http::HeaderMap| {
        headers
            .get("grpc-status")?
            .to_str()
            .ok()?
            .parse::<i32>()
            .ok()
    };
    let mut outcome = Outcome {
        status: code(response.headers()),
        subscribed: 0,
    };
    if outcome.status.is_some() {
        return outcome;
    }
    let mut body = response.into_body();
    let mut buffer = BytesMut::new();
    while let Some(frame) = body.frame().await {
        // A body that breaks off is an answer with no status.
        let Ok(frame) = frame else {
            return outcome;
        };
        let frame = match frame.into_data() {
            Ok(mut data) => {
                buffer.put(data.copy_to_bytes(data.remaining()));
                while buffer.len() >= 5 {
                    let len =
                        u32::from_be_bytes([buffer[1], buffer[2], buffer[3], buffer[4]]) as usize;
                    if buffer.len() < 5 + len {
                        break;
                    }
                    let message = buffer.split_to(5 + len).split_off(5);
                    let event = pb::UserEvent::decode(message.freeze());
                    if event.is_ok_and(|e| e.event_type == "subscribed") {
                        outcome.subscribed += 1;
                    }
                }
                if subscriptions > 0 && outcome.subscribed == subscriptions {
                    return outcome;
                }
                continue;
            }
            Err(frame) => frame,
        };
        if let Ok(trailers) = frame.into_trailers() {
            outcome.status = code(&trailers);
            return outcome;
        }
    }
    outcome
}
