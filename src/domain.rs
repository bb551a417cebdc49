//! Domain types, and the one place where wire types become them.
//!
//! Every value a handler or a store sees has been through a `parse` here, so
//! that an invalid name or email cannot exist past the edge. Parsing collects
//! every violation, not just the first, because a client fixing a form wants
//! to hear about all of its fields at once.

use std::fmt;

use crate::pb;

pub mod filter;
pub mod labels;
pub mod order;
mod text;
mod violations;

pub use filter::Filter;
pub use labels::Labels;
pub use order::{Order, SortValue};
pub use text::is_format;
pub use violations::{FieldViolation, Violations};

/// Longest user name, in characters.
pub const MAX_NAME_CHARS: usize = 200;
/// Longest email address, in characters (RFC 5321's path limit).
pub const MAX_EMAIL_CHARS: usize = 254;
/// Longest bio, in characters.
pub const MAX_BIO_CHARS: usize = 2_000;
/// Longest user id a request may name. Ids we issue are 36 characters; the
/// bound keeps a hostile id from reaching the store or the logs.
pub const MAX_ID_CHARS: usize = 128;

/// A user id: non-empty, server-assigned, never reused.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct UserId(String);

impl UserId {
    /// Length of the ids we issue (a hyphenated UUID).
    pub const LEN: usize = 36;

    /// A fresh id. UUIDv7 is unique across processes without coordination,
    /// which several replicas over one database need, and sorts by time.
    pub fn generate() -> Self {
        Self(uuid::Uuid::now_v7().to_string())
    }

    /// Checks an id that a request names in `field`.
    pub fn parse(field: &str, value: String) -> Result<Self, FieldViolation> {
        if value.is_empty() {
            return Err(FieldViolation::new(field, "must not be empty"));
        }
        if value.chars().count() > MAX_ID_CHARS {
            return Err(FieldViolation::new(
                field,
                format!("must be at most {MAX_ID_CHARS} characters"),
            ));
        }
        Ok(Self(value))
    }

    /// Wraps an id read back from storage, which was checked when written.
    pub fn from_stored(value: String) -> Self {
        Self(value)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A display name: trimmed, 1 to [`MAX_NAME_CHARS`] characters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UserName(String);

impl UserName {
    /// Wraps a name read back from storage, which was checked when written.
    pub fn from_stored(value: String) -> Self {
        Self(value)
    }

    pub fn parse(value: &str) -> Result<Self, String> {
        let trimmed = value.trim();
        if trimmed.is_empty() {
            Err("must not be empty".into())
        } else if trimmed.chars().count() > MAX_NAME_CHARS {
            Err("must be at most 200 characters".into())
        } else if let Some(refused) = text::refused_char(trimmed, &[], false) {
            Err(refused)
        } else {
            Ok(Self(trimmed.to_owned()))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// An email address that is plausible: one `@`, a non-empty local part, a
/// dotted domain, no white space, at most [`MAX_EMAIL_CHARS`] characters.
/// Deliverability is not our business; typos that can never deliver are.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Email(String);

impl Email {
    /// Wraps an address read back from storage, which was checked when written.
    pub fn from_stored(value: String) -> Self {
        Self(value)
    }

    pub fn parse(value: &str) -> Result<Self, String> {
        const LIKE: &str = "must be an email address like name@example.com";
        let trimmed = value.trim();
        if trimmed.is_empty() {
            return Err("must not be empty".into());
        }
        if trimmed.chars().count() > MAX_EMAIL_CHARS {
            return Err("must be at most 254 characters".into());
        }
        if let Some(refused) = text::refused_char(trimmed, &[], false) {
            return Err(refused);
        }
        let Some((local, domain)) = trimmed.split_once('@') else {
            return Err(LIKE.into());
        };
        let plausible = !local.is_empty()
            && local.len() <= 64
            && !domain.contains('@')
            && domain.contains('.')
            && domain.split('.').all(|label| !label.is_empty())
            && !trimmed.chars().any(|c| c.is_whitespace() || c.is_control());
        if plausible {
            Ok(Self(trimmed.to_owned()))
        } else {
            Err(LIKE.into())
        }
    }

    /// The form uniqueness is decided on: two addresses that differ only in
    /// case belong to one person. Compatibility forms are not folded (NFKC
    /// would make "ａｄａ@example.com" and "ada@example.com" one key): mail
    /// systems deliver them to different mailboxes, so they are different
    /// addresses; invisible characters, which make look-alikes that differ
    /// in nothing a reader sees, are refused instead.
    pub fn unique_key(&self) -> String {
        self.0.to_lowercase()
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Free text about a user, at most [`MAX_BIO_CHARS`] characters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Bio(String);

impl Bio {
    /// Wraps a bio read back from storage, which was checked when written.
    pub fn from_stored(value: String) -> Self {
        Self(value)
    }

    /// A bio may hold lines and tabs, and the joiners emoji need, but no
    /// other control character.
    pub fn parse(value: String) -> Result<Self, String> {
        if value.chars().count() > MAX_BIO_CHARS {
            Err("must be at most 2000 characters".into())
        } else if let Some(refused) = text::refused_char(&value, &['\n', '\t'], true) {
            Err(refused)
        } else {
            Ok(Self(value))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// What a user, or a token's holder, may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Admin,
    Editor,
    Viewer,
}

impl Role {
    pub const ALL: [Role; 3] = [Role::Admin, Role::Editor, Role::Viewer];

    /// The lowercase name used in tokens, the CLI and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Editor => "editor",
            Role::Viewer => "viewer",
        }
    }

    /// Reads a role name as people write it: `admin`, `ADMIN` or
    /// `USER_ROLE_ADMIN`, in any case.
    pub fn from_name(name: &str) -> Option<Role> {
        let upper = name.trim().to_ascii_uppercase();
        let bare = upper.strip_prefix("USER_ROLE_").unwrap_or(&upper);
        Role::ALL
            .into_iter()
            .find(|role| role.as_str().eq_ignore_ascii_case(bare))
    }

    /// The role's number in the contract, which is also how stores keep it.
    pub fn number(self) -> i32 {
        pb::UserRole::from(self) as i32
    }

    /// The role with that number, if it is one.
    pub fn from_number(number: i32) -> Option<Role> {
        Role::from_wire(number).ok().flatten()
    }

    /// Reads a wire role. `UNSPECIFIED` yields `None`, for the caller to
    /// default or refuse; a number outside the enum is an error.
    fn from_wire(value: i32) -> Result<Option<Role>, &'static str> {
        match pb::UserRole::try_from(value) {
            Ok(pb::UserRole::Unspecified) => Ok(None),
            Ok(pb::UserRole::Admin) => Ok(Some(Role::Admin)),
            Ok(pb::UserRole::Editor) => Ok(Some(Role::Editor)),
            Ok(pb::UserRole::Viewer) => Ok(Some(Role::Viewer)),
            Err(_) => Err("is not a known UserRole value"),
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl From<Role> for pb::UserRole {
    fn from(role: Role) -> Self {
        match role {
            Role::Admin => pb::UserRole::Admin,
            Role::Editor => pb::UserRole::Editor,
            Role::Viewer => pb::UserRole::Viewer,
        }
    }
}

/// A user as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct User {
    pub id: UserId,
    pub name: UserName,
    pub email: Email,
    pub role: Role,
    /// Unix seconds, fixed at creation.
    pub created_at: i64,
    pub bio: Option<Bio>,
    /// Unix seconds of the last change; `created_at` until then.
    pub updated_at: i64,
    /// Counts the user's versions from 1; every change adds one, in the
    /// same transaction, so it is the same on every replica.
    pub revision: i64,
    pub labels: Labels,
    /// The etag as last hashed, for the revision it was hashed at.
    pub etag_memo: EtagMemo,
}

impl User {
    /// The version a client sends back to change only this one: a hash of
    /// the id and the revision, so that it says nothing and no two users'
    /// versions look alike.
    pub fn etag(&self) -> String {
        match self.etag_memo.hex(self.revision) {
            Some(hex) => hex.to_owned(),
            None => etag(&self.id, self.revision),
        }
    }

    /// Hashes the etag of the current revision once, for every later read:
    /// the memory store keeps its users, and the hash (a chain of 45
    /// multiplications) was an eighth of a listing's time.
    pub fn memoize_etag(&mut self) {
        let hex = etag(&self.id, self.revision);
        let mut memo = [0; 16];
        memo.copy_from_slice(hex.as_bytes());
        self.etag_memo = EtagMemo {
            revision: self.revision,
            hex: memo,
        };
    }
}

/// A user's etag and the revision it is of; revision 0 (no user has it)
/// when there is none. Read only while the revision is the same, so a
/// memo that is stale or missing costs a hash, never a wrong etag.
#[derive(Clone, Copy, Debug, Default)]
pub struct EtagMemo {
    revision: i64,
    hex: [u8; 16],
}

impl EtagMemo {
    fn hex(&self, revision: i64) -> Option<&str> {
        (self.revision == revision && revision != 0)
            .then(|| std::str::from_utf8(&self.hex).ok())
            .flatten()
    }
}

/// Derived data: users are equal whatever each has memoized.
impl PartialEq for EtagMemo {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Eq for EtagMemo {}

/// [`User::etag`] of the user `id` at `revision`: FNV-1a, 64 bits, which is
/// the same in every process and release.
pub fn etag(id: &UserId, revision: i64) -> String {
    // One loop a slice: the iterator chain this replaced kept the compiler
    // from a plain loop, and made the etag an eighth of a listing's time.
    fn fnv1a(mut hash: u64, bytes: &[u8]) -> u64 {
        for &byte in bytes {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
        hash
    }
    let hash = fnv1a(0xcbf2_9ce4_8422_2325, id.0.as_bytes());
    let hash = fnv1a(hash, &[0]);
    let hash = fnv1a(hash, &revision.to_le_bytes());
    // Hex by hand, without the formatting machinery: every user a listing
    // or a page sends is converted.
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut text = [0u8; 16];
    for (at, digit) in text.iter_mut().enumerate() {
        *digit = HEX[((hash >> ((15 - at) * 4)) & 0xf) as usize];
    }
    String::from(std::str::from_utf8(&text).expect("hex digits are ASCII"))
}

impl From<User> for pb::User {
    fn from(user: User) -> Self {
        let etag = user.etag();
        pb::User {
            id: user.id.0,
            name: user.name.0,
            email: user.email.0,
            role: pb::UserRole::from(user.role) as i32,
            created_at: user.created_at,
            bio: user.bio.map(|bio| bio.0),
            updated_at: user.updated_at,
            etag,
            labels: user.labels,
        }
    }
}

impl User {
    /// This user encoded as its `pb::User` would encode, written from the
    /// stored fields rather than from a converted copy of them: a listing
    /// sends a million users a second, and the copy's allocations were
    /// most of its time. Fields in tag order, defaults left out, as prost
    /// writes them; a test compares the two.
    pub fn encode_wire(&self) -> Vec<u8> {
        use prost::encoding::{WireType, encode_key, encode_varint, int64, string};
        fn text(tag: u32, value: &str, wire: &mut Vec<u8>) {
            encode_key(tag, WireType::LengthDelimited, wire);
            encode_varint(value.len() as u64, wire);
            wire.extend_from_slice(value.as_bytes());
        }
        let mut wire = Vec::with_capacity(256);
        for (tag, value) in [(1, &self.id.0), (2, &self.name.0), (3, &self.email.0)] {
            if !value.is_empty() {
                text(tag, value, &mut wire);
            }
        }
        let role = pb::UserRole::from(self.role) as i32;
        if role != 0 {
            encode_key(4, WireType::Varint, &mut wire);
            encode_varint(i64::from(role) as u64, &mut wire);
        }
        if self.created_at != 0 {
            int64::encode(5, &self.created_at, &mut wire);
        }
        if let Some(bio) = &self.bio {
            text(6, &bio.0, &mut wire);
        }
        if self.updated_at != 0 {
            int64::encode(7, &self.updated_at, &mut wire);
        }
        match self.etag_memo.hex(self.revision) {
            Some(etag) => text(8, etag, &mut wire),
            None => text(8, &self.etag(), &mut wire),
        }
        prost::encoding::btree_map::encode(
            string::encode,
            string::encoded_len,
            string::encode,
            string::encoded_len,
            9,
            &self.labels,
            &mut wire,
        );
        wire
    }
}

/// A valid request to create a user.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewUser {
    pub name: UserName,
    pub email: Email,
    pub role: Role,
    pub bio: Option<Bio>,
    pub labels: Labels,
}

impl NewUser {
    /// Validates a CreateUserRequest; `UNSPECIFIED` role becomes viewer.
    pub fn parse(request: pb::CreateUserRequest) -> Result<Self, Violations> {
        let mut violations = Violations::default();
        let name = violations.check("name", UserName::parse(&request.name));
        let email = violations.check("email", Email::parse(&request.email));
        let role = violations.check("role", Role::from_wire(request.role));
        let bio = request
            .bio
            .map(|bio| violations.check("bio", Bio::parse(bio)));
        labels::check("labels", &request.labels, &mut violations);
        violations.into_result()?;
        Ok(NewUser {
            name: name.expect("checked"),
            email: email.expect("checked"),
            role: role.expect("checked").unwrap_or(Role::Viewer),
            bio: bio.map(|bio| bio.expect("checked")),
            labels: request.labels,
        })
    }

    /// An upper bound on the encoded size of the `User` this will become.
    pub fn max_encoded_len(&self) -> usize {
        use prost::encoding::{encoded_len_varint, key_len};
        let string = |len: usize| key_len(1) + encoded_len_varint(len as u64) + len;
        let varint = key_len(1) + 10;
        let labels: usize = self
            .labels
            .iter()
            .map(|(k, v)| string(string(k.len()) + string(v.len())))
            .sum();
        string(UserId::LEN)
            + string(self.name.0.len())
            + string(self.email.0.len())
            + varint // role
            + varint // created_at
            + self.bio.as_ref().map_or(0, |bio| string(bio.0.len()))
            + varint // updated_at
            + string(16) // etag
            + labels
    }

    /// Makes the stored user, stamped now, at its first revision.
    pub fn into_user(self, id: UserId, created_at: i64) -> User {
        User {
            id,
            name: self.name,
            email: self.email,
            role: self.role,
            created_at,
            bio: self.bio,
            updated_at: created_at,
            revision: 1,
            labels: self.labels,
            etag_memo: EtagMemo::default(),
        }
    }
}

/// A valid UpdateUserRequest: the user, and the fields to change.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UserPatch {
    pub name: Option<UserName>,
    pub email: Option<Email>,
    pub role: Option<Role>,
    /// `Some(None)` removes the bio.
    pub bio: Option<Option<Bio>>,
    /// Labels added or changed.
    pub set_labels: Labels,
    /// Label keys removed.
    pub remove_labels: Vec<String>,
    /// The version ([`User::etag`]) the change applies to; `None` for any.
    pub etag: Option<String>,
}

impl UserPatch {
    pub fn parse(request: pb::UpdateUserRequest) -> Result<(UserId, Self), Violations> {
        let mut violations = Violations::default();
        let id = violations.push_err(UserId::parse("user_id", request.user_id));
        let name = request
            .name
            .map(|name| violations.check("name", UserName::parse(&name)));
        let email = request
            .email
            .map(|email| violations.check("email", Email::parse(&email)));
        let role = request.role.map(|role| {
            let role = Role::from_wire(role)
                .and_then(|role| role.ok_or("must not be USER_ROLE_UNSPECIFIED"));
            violations.check("role", role)
        });
        let bio = request.bio.map(|bio| match bio.is_empty() {
            true => Some(None),
            false => violations.check("bio", Bio::parse(bio)).map(Some),
        });
        labels::check("set_labels", &request.set_labels, &mut violations);
        labels::check_removed(
            "remove_labels",
            &request.remove_labels,
            &request.set_labels,
            "set_labels",
            &mut violations,
        );
        violations.into_result()?;
        let patch = UserPatch {
            name: name.map(|v| v.expect("checked")),
            email: email.map(|v| v.expect("checked")),
            role: role.map(|v| v.expect("checked")),
            bio: bio.map(|v| v.expect("checked")),
            set_labels: request.set_labels,
            remove_labels: request.remove_labels,
            etag: Some(request.etag).filter(|etag| !etag.is_empty()),
        };
        Ok((id.expect("checked"), patch))
    }

    /// Applies the patch to `user`, as its next version, changed at `now`.
    /// Refuses a change that would leave the user with too many labels.
    pub fn apply(self, user: &mut User, now: i64) -> Result<(), Violations> {
        for key in &self.remove_labels {
            user.labels.remove(key);
        }
        user.labels.extend(self.set_labels);
        if user.labels.len() > labels::MAX_LABELS {
            let mut violations = Violations::default();
            violations.check::<(), _>(
                "set_labels",
                Err(format!(
                    "a user may carry at most {} labels; this change would leave {}",
                    labels::MAX_LABELS,
                    user.labels.len()
                )),
            );
            return Err(violations);
        }
        if let Some(name) = self.name {
            user.name = name;
        }
        if let Some(email) = self.email {
            user.email = email;
        }
        if let Some(role) = self.role {
            user.role = role;
        }
        if let Some(bio) = self.bio {
            user.bio = bio;
        }
        user.updated_at = now.max(user.created_at);
        user.revision += 1;
        Ok(())
    }
}

/// A valid ListUsersRequest.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ListQuery {
    /// `filter` and `filter_role`, ANDed.
    pub filter: Option<Filter>,
    pub order: Order,
    pub offset: u64,
    /// `None` means every matching user.
    pub limit: Option<u64>,
}

impl ListQuery {
    pub fn parse(request: pb::ListUsersRequest) -> Result<Self, Violations> {
        let mut violations = Violations::default();
        let non_negative = |value: i32| u64::try_from(value).map_err(|_| "must not be negative");
        let limit = violations.check("limit", non_negative(request.limit));
        let offset = violations.check("offset", non_negative(request.offset));
        let role = match request.filter_role.trim() {
            "" => Some(None),
            name => violations.check(
                "filter_role",
                Role::from_name(name)
                    .map(Some)
                    .ok_or("must be admin, editor or viewer"),
            ),
        };
        let filter = violations.check(
            "filter",
            filter::parse(&request.filter).map_err(|e| e.to_string()),
        );
        let order = violations.check(
            "order_by",
            Order::parse(&request.order_by, Order::default()),
        );
        violations.into_result()?;
        let filter = match (filter.expect("checked"), role.expect("checked")) {
            (filter, None) => filter,
            (None, Some(role)) => Some(Filter::Role(role)),
            (Some(filter), Some(role)) => Some(Filter::Role(role).and(filter)),
        };
        Ok(ListQuery {
            filter,
            order: order.expect("checked"),
            offset: offset.expect("checked"),
            limit: Some(limit.expect("checked")).filter(|&limit| limit > 0),
        })
    }
}

/// A WatchUserEvents subscription.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Subscription {
    /// `*`: every user.
    All,
    One(UserId),
}

impl Subscription {
    /// `*`, or a user id as the server issues them (a UUID in its
    /// canonical lower-case form). Anything else could never match an event,
    /// and would only cost the server memory.
    pub fn parse(request: pb::EventStreamRequest) -> Result<Self, Violations> {
        if request.user_id == "*" {
            return Ok(Subscription::All);
        }
        let issued = request.user_id.len() == UserId::LEN
            && uuid::Uuid::try_parse(&request.user_id)
                .is_ok_and(|uuid| uuid.hyphenated().to_string() == request.user_id);
        if !issued {
            let mut violations = Violations::default();
            violations.check::<(), _>(
                "user_id",
                Err("must be * or a user id, a UUID such as 0190c0de-0000-7000-8000-000000000000"),
            );
            return Err(violations);
        }
        Ok(Subscription::One(UserId::from_stored(request.user_id)))
    }
}

/// One request to watch: what to follow, and where to resume.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Subscribe {
    pub targets: Vec<Subscription>,
    /// Replay the targets' changes after this sequence first; 0 starts live.
    pub resume_after: u64,
}

impl Subscribe {
    /// One WatchUserEvents request.
    pub fn parse(request: pb::EventStreamRequest) -> Result<Self, Violations> {
        let resume_after = resume_after(request.resume_after);
        let target = Subscription::parse(request);
        match (target, resume_after) {
            (Ok(target), Ok(resume_after)) => Ok(Subscribe {
                targets: vec![target],
                resume_after,
            }),
            (target, resume_after) => {
                let mut violations = target.err().unwrap_or_default();
                violations.check("resume_after", resume_after);
                Err(violations)
            }
        }
    }

    /// Every subscription of a SubscribeUserEvents request, checked before
    /// any is in force: at least one, at most `max`, each as `parse` wants.
    pub fn parse_all(
        request: pb::SubscribeUserEventsRequest,
        max: usize,
    ) -> Result<Self, Violations> {
        let mut violations = Violations::default();
        if request.user_ids.is_empty() {
            violations.check::<(), _>("user_ids", Err("must hold a user id, or *"));
        }
        if request.user_ids.len() > max {
            violations.check::<(), _>(
                "user_ids",
                Err(format!("may hold at most {max} subscriptions")),
            );
        }
        let mut targets = Vec::with_capacity(request.user_ids.len());
        for (index, user_id) in request.user_ids.into_iter().enumerate() {
            match Subscription::parse(pb::EventStreamRequest {
                user_id,
                resume_after: 0,
            }) {
                Ok(target) => targets.push(target),
                Err(invalid) => {
                    for violation in invalid.iter() {
                        violations.check::<(), _>(
                            &format!("user_ids[{index}]"),
                            Err(violation.description.clone()),
                        );
                    }
                }
            }
        }
        let resume_after = violations.check("resume_after", resume_after(request.resume_after));
        violations.into_result().map(|()| Subscribe {
            targets,
            resume_after: resume_after.unwrap_or(0),
        })
    }
}

/// A resume point: a sequence the server gave out, so never negative.
fn resume_after(value: i64) -> Result<u64, &'static str> {
    u64::try_from(value).map_err(|_| "must not be negative: it is a UserEvent.sequence, or 0")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A listing sends what `encode_wire` writes: it must be the bytes
    /// prost writes for the converted message, whatever the fields hold.
    #[test]
    fn a_user_encodes_straight_as_its_message_would() {
        use prost::Message;
        let base = NewUser::parse(pb::CreateUserRequest {
            name: "Ann Lee".into(),
            email: "ann@example.com".into(),
            role: pb::UserRole::Editor as i32,
            ..Default::default()
        })
        .unwrap()
        .into_user(UserId::generate(), 1_700_000_000);
        let mut cases = vec![base.clone()];
        let mut labelled = base.clone();
        labelled.labels = [("team", "blue"), ("a", ""), ("site", "s3")]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        labelled.bio = Some(Bio::from_stored("Writes ünïcode".into()));
        labelled.memoize_etag();
        cases.push(labelled.clone());
        let mut changed = labelled.clone();
        changed.revision = 300;
        changed.updated_at = 1_800_000_000;
        changed.bio = Some(Bio::from_stored(String::new()));
        changed.role = Role::Viewer;
        cases.push(changed);
        let mut zeros = base;
        zeros.created_at = 0;
        zeros.updated_at = 0;
        zeros.role = Role::Admin;
        zeros.memoize_etag();
        cases.push(zeros);
        for user in cases {
            let message = pb::User::from(user.clone());
            assert_eq!(user.encode_wire(), message.encode_to_vec(), "{user:?}");
        }
    }

    #[test]
    fn an_etag_is_sixteen_hex_digits_of_the_id_and_revision() {
        let id = UserId::from_stored("0190c0de-0000-7000-8000-000000000000".into());
        assert_eq!(
            etag(&id, 1),
            format!("{:016x}", u64::from_str_radix(&etag(&id, 1), 16).unwrap())
        );
        assert_eq!(etag(&id, 1).len(), 16);
        // Clients keep etags across releases: the function never changes.
        assert_eq!(etag(&id, 7), "6b48a9887f221e8f");

        // A memo is read only at its own revision.
        let mut user = NewUser::parse(pb::CreateUserRequest {
            name: "Ann".into(),
            email: "ann@example.com".into(),
            ..Default::default()
        })
        .unwrap()
        .into_user(id.clone(), 0);
        user.revision = 7;
        user.memoize_etag();
        assert_eq!(user.etag(), "6b48a9887f221e8f");
        user.revision = 1;
        assert_eq!(user.etag(), etag(&id, 1), "a stale memo is not read");
        assert_ne!(etag(&id, 1), etag(&id, 2));
        let other = UserId::from_stored("0190c0de-0000-7000-8000-000000000001".into());
        assert_ne!(etag(&id, 1), etag(&other, 1));
    }

    #[test]
    fn role_names_are_read_in_every_spelling() {
        for name in [
            "admin",
            "ADMIN",
            "USER_ROLE_ADMIN",
            "user_role_admin",
            " Admin ",
        ] {
            assert_eq!(Role::from_name(name), Some(Role::Admin), "{name}");
        }
        assert_eq!(Role::from_name("USER_ROLE_UNSPECIFIED"), None);
        assert_eq!(Role::from_name("root"), None);
    }

    #[test]
    fn emails_must_be_plausible() {
        for good in ["a@b.co", "first.last+tag@sub.example.org", " x@y.io "] {
            assert!(Email::parse(good).is_ok(), "{good}");
        }
        for bad in [
            "", "plain", "@b.co", "a@b", "a@@b.co", "a@b..co", "a b@c.io", "a@.io",
        ] {
            assert!(Email::parse(bad).is_err(), "{bad}");
        }
        let long = format!("{}@example.com", "a".repeat(250));
        assert!(Email::parse(&long).is_err());
    }

    #[test]
    fn create_request_reports_every_invalid_field() {
        let request = pb::CreateUserRequest {
            name: "  ".into(),
            email: "nope".into(),
            role: 42,
            bio: Some("b".repeat(MAX_BIO_CHARS + 1)),
            labels: Labels::new(),
        };
        let violations = NewUser::parse(request).unwrap_err();
        let fields: Vec<_> = violations.iter().map(|v| v.field.as_str()).collect();
        assert_eq!(fields, ["name", "email", "role", "bio"]);
    }

    #[test]
    fn unspecified_role_becomes_viewer_on_create_but_is_refused_on_update() {
        let user = NewUser::parse(pb::CreateUserRequest {
            name: "Ann".into(),
            email: "ann@example.com".into(),
            role: 0,
            bio: None,
            labels: Labels::new(),
        })
        .unwrap();
        assert_eq!(user.role, Role::Viewer);

        let update = UserPatch::parse(pb::UpdateUserRequest {
            user_id: "u1".into(),
            role: Some(0),
            ..Default::default()
        });
        assert_eq!(update.unwrap_err().iter().next().unwrap().field, "role");
    }

    #[test]
    fn list_query_limit_zero_means_unlimited_and_negatives_are_refused() {
        let query = ListQuery::parse(pb::ListUsersRequest::default()).unwrap();
        assert_eq!(query, ListQuery::default());
        let err = ListQuery::parse(pb::ListUsersRequest {
            limit: -1,
            offset: -2,
            filter_role: "boss".into(),
            ..Default::default()
        })
        .unwrap_err();
        let fields: Vec<_> = err.iter().map(|v| v.field.as_str()).collect();
        assert_eq!(fields, ["limit", "offset", "filter_role"]);
    }
}
