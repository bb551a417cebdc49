//! One contract, every store: memory, SQLite and PostgreSQL give the same
//! semantics. Each test runs its body against each store in turn.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use usersvc::domain::{Bio, Email, NewUser, Role, UserId, UserName, UserPatch};
use usersvc::events::EventKind;
use usersvc::store::{
    self, Created, Cursor, IdempotencyKey, PageQuery, StoreError, StoreOptions, UserStore,
};

/// A way to open the same store again, as a restarted server would.
struct Opened {
    name: &'static str,
    url: String,
    store: Arc<dyn UserStore>,
    _dir: Option<tempfile::TempDir>,
}

impl Opened {
    async fn reopen(&self) -> Arc<dyn UserStore> {
        store::open(&self.url, &StoreOptions::default())
            .await
            .unwrap()
    }
}

/// Every store there is: memory, a fresh SQLite file, a fresh PostgreSQL
/// schema (unless `make test` announced PostgreSQL skipped).
async fn stores() -> Vec<Opened> {
    let dir = tempfile::tempdir().unwrap();
    let sqlite = format!("sqlite://{}/users.db", dir.path().display());
    let mut stores = vec![
        Opened {
            name: "memory",
            url: "memory".into(),
            store: store::open("memory", &StoreOptions::default())
                .await
                .unwrap(),
            _dir: None,
        },
        Opened {
            name: "sqlite",
            store: store::open(&sqlite, &StoreOptions::default())
                .await
                .unwrap(),
            url: sqlite,
            _dir: Some(dir),
        },
    ];
    if let Some(url) = crate::support::postgres_url().await {
        stores.push(Opened {
            name: "postgres",
            store: store::open(&url, &StoreOptions::default()).await.unwrap(),
            url,
            _dir: None,
        });
    }
    stores
}

fn new_user(name: &str, email: &str, role: Role) -> NewUser {
    NewUser {
        name: UserName::parse(name).unwrap(),
        email: Email::parse(email).unwrap(),
        role,
        bio: None,
        labels: Default::default(),
    }
}

async fn create(store: &dyn UserStore, name: &str, email: &str) -> usersvc::domain::User {
    match store
        .create(new_user(name, email, Role::Viewer), None)
        .await
        .unwrap()
    {
        Created::New(user) => user,
        Created::Replayed(_) => panic!("no key, no replay"),
    }
}

async fn all(store: &dyn UserStore) -> Vec<usersvc::domain::User> {
    store
        .list_page(PageQuery {
            limit: 100_000,
            ..Default::default()
        })
        .await
        .unwrap()
        .users
        .iter()
        .map(|user| usersvc::domain::User::clone(user))
        .collect()
}

#[tokio::test]
async fn created_users_read_back_exactly_and_survive_a_reopen() {
    for opened in stores().await {
        let store = &*opened.store;
        let mut user = new_user("Ann", "Ann@Example.com", Role::Editor);
        user.bio = Some(Bio::parse("bïo ☺".into()).unwrap());
        let Created::New(created) = store.create(user, None).await.unwrap() else {
            panic!()
        };
        assert_eq!(
            store.get(&created.id).await.unwrap(),
            created,
            "{}",
            opened.name
        );
        assert_eq!(
            created.email.as_str(),
            "Ann@Example.com",
            "{}: case kept",
            opened.name
        );
        if opened.name != "memory" {
            let reopened = opened.reopen().await;
            assert_eq!(
                reopened.get(&created.id).await.unwrap(),
                created,
                "{}",
                opened.name
            );
        }
    }
}

#[tokio::test]
async fn emails_are_unique_without_regard_to_case_even_when_racing() {
    for opened in stores().await {
        let store = opened.store.clone();
        create(&*store, "A", "same@example.com").await;
        let err = store
            .create(new_user("B", "SAME@example.com", Role::Viewer), None)
            .await
            .unwrap_err();
        assert!(
            matches!(err, StoreError::EmailTaken(_)),
            "{}: {err:?}",
            opened.name
        );

        // Concurrent creates of one new address: one wins, the rest are refused.
        let racers: Vec<_> = (0..8)
            .map(|i| {
                let store = store.clone();
                tokio::spawn(async move {
                    store
                        .create(
                            new_user(&format!("R{i}"), "race@EXAMPLE.com", Role::Viewer),
                            None,
                        )
                        .await
                })
            })
            .collect();
        let mut ok = 0;
        for racer in racers {
            match racer.await.unwrap() {
                Ok(_) => ok += 1,
                Err(StoreError::EmailTaken(_)) => {}
                Err(other) => panic!("{}: {other:?}", opened.name),
            }
        }
        assert_eq!(ok, 1, "{}", opened.name);
    }
}

#[tokio::test]
async fn ids_are_unique_and_not_reused() {
    for opened in stores().await {
        let store = &*opened.store;
        let mut ids = HashSet::new();
        for i in 0..50 {
            let user = create(store, "U", &format!("u{i}@example.com")).await;
            assert!(ids.insert(user.id.clone()), "{}", opened.name);
            if i % 2 == 0 {
                store.delete(&user.id, None).await.unwrap();
            }
        }
        assert_eq!(all(store).await.len(), 25, "{}", opened.name);
    }
}

#[tokio::test]
async fn bulk_creation_is_all_or_nothing_and_names_the_index() {
    for opened in stores().await {
        let store = &*opened.store;
        create(store, "Old", "old@example.com").await;
        let batch = |emails: &[&str]| {
            emails
                .iter()
                .map(|e| new_user("B", e, Role::Viewer))
                .collect::<Vec<_>>()
        };

        let err = store
            .create_many(batch(&["a@example.com", "b@example.com", "A@example.com"]))
            .await
            .unwrap_err();
        assert!(
            matches!(err, StoreError::Item { index: 2, .. }),
            "{}: {err:?}",
            opened.name
        );
        let err = store
            .create_many(batch(&["a@example.com", "OLD@example.com"]))
            .await
            .unwrap_err();
        assert!(
            matches!(err, StoreError::Item { index: 1, .. }),
            "{}: {err:?}",
            opened.name
        );
        assert_eq!(all(store).await.len(), 1, "{}: nothing stored", opened.name);

        let emails: Vec<String> = (0..1_200).map(|i| format!("bulk{i}@example.com")).collect();
        let refs: Vec<&str> = emails.iter().map(String::as_str).collect();
        let created = store.create_many(batch(&refs)).await.unwrap();
        assert_eq!(created.len(), 1_200, "{}", opened.name);
        let listed = all(store).await;
        assert_eq!(listed.len(), 1_201, "{}", opened.name);
        assert_eq!(
            &listed[1..],
            &created[..],
            "{}: creation order",
            opened.name
        );

        // A taken address deep in a large batch, wherever it falls among
        // the rows a store writes together, is named by its own index.
        for taken_at in [0, 137, 199, 230, 249] {
            let mut emails: Vec<String> = (0..250)
                .map(|i| format!("second{taken_at}-{i}@example.com"))
                .collect();
            emails[taken_at] = "BULK5@example.com".to_owned();
            let refs: Vec<&str> = emails.iter().map(String::as_str).collect();
            let err = store.create_many(batch(&refs)).await.unwrap_err();
            match err {
                StoreError::Item { index, source } => {
                    assert_eq!(index, taken_at, "{}", opened.name);
                    assert!(
                        matches!(*source, StoreError::EmailTaken(ref e) if e == "BULK5@example.com"),
                        "{}: {source:?}",
                        opened.name
                    );
                }
                other => panic!("{}: {other:?}", opened.name),
            }
        }
        assert_eq!(
            all(store).await.len(),
            1_201,
            "{}: none of the refused batches stored",
            opened.name
        );
    }
}

#[tokio::test]
async fn idempotency_keys_replay_refuse_and_survive_a_reopen() {
    for opened in stores().await {
        let store = &*opened.store;
        let key = IdempotencyKey::parse("key-1").unwrap();
        let request = new_user("Kay", "kay@example.com", Role::Admin);
        let Created::New(first) = store
            .create(request.clone(), Some(key.clone()))
            .await
            .unwrap()
        else {
            panic!()
        };
        let again = store
            .create(request.clone(), Some(key.clone()))
            .await
            .unwrap();
        assert_eq!(again, Created::Replayed(first.clone()), "{}", opened.name);
        let other = new_user("Kay", "other@example.com", Role::Admin);
        let err = store.create(other, Some(key.clone())).await.unwrap_err();
        assert!(
            matches!(err, StoreError::IdempotencyKeyReused),
            "{}: {err:?}",
            opened.name
        );
        if opened.name != "memory" {
            let reopened = opened.reopen().await;
            let replay = reopened.create(request, Some(key)).await.unwrap();
            assert_eq!(
                replay,
                Created::Replayed(first),
                "{}: after a restart",
                opened.name
            );
        }
        assert_eq!(all(store).await.len(), 1, "{}", opened.name);
    }
}

#[tokio::test]
async fn an_idempotency_key_is_forgotten_when_its_user_is_deleted() {
    for opened in stores().await {
        let store = &*opened.store;
        let key = IdempotencyKey::parse("key-gone").unwrap();
        let request = new_user("Gus", "gus@example.com", Role::Viewer);
        let Created::New(first) = store
            .create(request.clone(), Some(key.clone()))
            .await
            .unwrap()
        else {
            panic!("{}: a replay of a fresh key", opened.name)
        };
        store.delete(&first.id, None).await.unwrap();

        // The same key with another request is a new user, not a reuse...
        let other = new_user("Gil", "gil@example.com", Role::Viewer);
        let Created::New(second) = store
            .create(other, Some(key.clone()))
            .await
            .unwrap_or_else(|e| panic!("{}: the key was remembered: {e:?}", opened.name))
        else {
            panic!("{}: replayed a deleted user", opened.name)
        };
        assert_ne!(second.id, first.id, "{}", opened.name);
        // ...and the first request again creates afresh, not the deleted user.
        store.delete(&second.id, None).await.unwrap();
        let Created::New(third) = store.create(request, Some(key)).await.unwrap() else {
            panic!("{}: replayed a deleted user", opened.name)
        };
        assert_ne!(third.id, first.id, "{}", opened.name);
        assert_eq!(all(store).await, vec![third], "{}", opened.name);
    }
}

#[tokio::test]
async fn pages_follow_creation_order_with_role_filter_skip_and_cursor() {
    for opened in stores().await {
        let store = &*opened.store;
        let roles = [Role::Admin, Role::Editor, Role::Viewer];
        let batch: Vec<_> = (0..30)
            .map(|i| new_user(&format!("p{i}"), &format!("p{i}@example.com"), roles[i % 3]))
            .collect();
        store.create_many(batch).await.unwrap();

        let mut names = Vec::new();
        let mut after: Option<Cursor> = None;
        loop {
            let page = store
                .list_page(PageQuery {
                    filter: Some(usersvc::domain::Filter::Role(Role::Editor)),
                    skip: if after.is_none() { 1 } else { 0 },
                    after: after.clone(),
                    limit: 3,
                    ..Default::default()
                })
                .await
                .unwrap();
            names.extend(page.users.iter().map(|u| u.name.as_str().to_owned()));
            if page.users.len() < 3 {
                break;
            }
            after = page.next;
        }
        let expected: Vec<String> = (0..30)
            .filter(|i| i % 3 == 1)
            .skip(1)
            .map(|i| format!("p{i}"))
            .collect();
        assert_eq!(names, expected, "{}", opened.name);
    }
}

#[tokio::test]
async fn updates_and_deletes_keep_the_indexes_right() {
    for opened in stores().await {
        let store = &*opened.store;
        let ann = create(store, "Ann", "ann@example.com").await;
        create(store, "Bob", "bob@example.com").await;
        let patch = |email: &str| UserPatch {
            name: None,
            email: Some(Email::parse(email).unwrap()),
            role: Some(Role::Admin),
            bio: Some(None),
            ..Default::default()
        };

        let err = store
            .update(&ann.id, patch("BOB@example.com"), false)
            .await
            .unwrap_err();
        assert!(
            matches!(err, StoreError::EmailTaken(_)),
            "{}: {err:?}",
            opened.name
        );
        let moved = store
            .update(&ann.id, patch("ann2@example.com"), false)
            .await
            .unwrap();
        assert_eq!(
            (moved.email.as_str(), moved.role, moved.created_at),
            ("ann2@example.com", Role::Admin, ann.created_at)
        );
        create(store, "New Ann", "ANN@example.com").await; // the old address is free

        let missing = UserId::from_stored("missing".into());
        assert!(matches!(
            store.update(&missing, patch("x@example.com"), false).await,
            Err(StoreError::NotFound(_))
        ));
        assert!(matches!(
            store.delete(&missing, None).await,
            Err(StoreError::NotFound(_))
        ));
        assert_eq!(
            store.delete(&ann.id, None).await.unwrap(),
            moved,
            "{}",
            opened.name
        );
        assert!(
            matches!(store.get(&ann.id).await, Err(StoreError::NotFound(_))),
            "{}",
            opened.name
        );
        create(store, "Ann 3", "ann2@example.com").await; // freed by the delete
    }
}

#[tokio::test]
async fn every_committed_write_is_announced_in_order() {
    for opened in stores().await {
        let store = &*opened.store;
        let mut events = store.events().tap();
        events.follow_all();
        let ann = create(store, "Ann", "ann@example.com").await;
        let _ = store
            .create(new_user("Dup", "ANN@example.com", Role::Viewer), None)
            .await
            .unwrap_err();
        store
            .create_many(vec![new_user("B", "b@example.com", Role::Viewer)])
            .await
            .unwrap();
        let _ = store
            .create_many(vec![new_user("B", "b@example.com", Role::Viewer)])
            .await
            .unwrap_err();
        store
            .update(
                &ann.id,
                UserPatch {
                    name: Some(UserName::parse("Ann 2").unwrap()),
                    email: None,
                    role: None,
                    bio: None,
                    ..Default::default()
                },
                false,
            )
            .await
            .unwrap();
        store.delete(&ann.id, None).await.unwrap();

        let mut seen = Vec::new();
        while seen.len() < 4 {
            let event = tokio::time::timeout(Duration::from_secs(10), events.recv())
                .await
                .unwrap_or_else(|_| panic!("{}: only {seen:?}", opened.name))
                .unwrap();
            seen.push(event.kind);
        }
        assert_eq!(
            seen,
            [
                EventKind::Created,
                EventKind::Created,
                EventKind::Updated,
                EventKind::Deleted
            ],
            "{}",
            opened.name
        );
        // Nothing for the writes that failed.
        let extra = tokio::time::timeout(Duration::from_millis(300), events.recv()).await;
        assert!(extra.is_err(), "{}: {extra:?}", opened.name);
    }
}

/// Writes that arrive together (SQLite commits them as one group) succeed
/// or fail each on its own: of 40 creates sent at once, the 8 that share
/// one address make exactly one user, the 32 others all succeed, and each
/// stored user is announced exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_writes_succeed_or_fail_each_on_their_own() {
    for opened in stores().await {
        let store = Arc::clone(&opened.store);
        let mut events = store.events().tap();
        events.follow_all();
        let mut calls = tokio::task::JoinSet::new();
        for i in 0..40 {
            let email = if i % 5 == 0 {
                "shared@example.com".to_owned()
            } else {
                format!("own{i}@example.com")
            };
            let store = Arc::clone(&store);
            calls.spawn(async move {
                store
                    .create(new_user("Con", &email, Role::Viewer), None)
                    .await
            });
        }
        let mut created = HashSet::new();
        let mut taken = 0;
        while let Some(outcome) = calls.join_next().await {
            match outcome.unwrap() {
                Ok(Created::New(user)) => assert!(created.insert(user.id.clone())),
                Err(StoreError::EmailTaken(email)) => {
                    assert_eq!(email, "shared@example.com", "{}", opened.name);
                    taken += 1;
                }
                other => panic!("{}: {other:?}", opened.name),
            }
        }
        assert_eq!((created.len(), taken), (33, 7), "{}", opened.name);
        let stored: HashSet<UserId> = all(&*store).await.into_iter().map(|u| u.id).collect();
        assert_eq!(stored, created, "{}: what is stored", opened.name);

        let mut announced = HashSet::new();
        while announced.len() < created.len() {
            let event = tokio::time::timeout(Duration::from_secs(10), events.recv())
                .await
                .unwrap_or_else(|_| panic!("{}: {} announced", opened.name, announced.len()))
                .unwrap();
            assert_eq!(event.kind, EventKind::Created, "{}", opened.name);
            assert!(
                announced.insert(UserId::from_stored(event.user_id.clone())),
                "{}: announced twice",
                opened.name
            );
        }
        assert_eq!(announced, created, "{}: what is announced", opened.name);
        let extra = tokio::time::timeout(Duration::from_millis(300), events.recv()).await;
        assert!(extra.is_err(), "{}: {extra:?}", opened.name);

        // Bulk creations at once, one of which fails after writing 230 of
        // its users: it leaves none of them, and the others all of theirs.
        let mut batches = tokio::task::JoinSet::new();
        for batch in 0..4 {
            let store = Arc::clone(&store);
            batches.spawn(async move {
                let users = (0..250)
                    .map(|i| {
                        let email = if batch == 2 && i == 230 {
                            "own1@example.com".to_owned()
                        } else {
                            format!("batch{batch}-{i}@example.com")
                        };
                        new_user("Bulk", &email, Role::Viewer)
                    })
                    .collect();
                (batch, store.create_many(users).await)
            });
        }
        while let Some(outcome) = batches.join_next().await {
            match outcome.unwrap() {
                (2, Err(StoreError::Item { index: 230, .. })) => {}
                (batch, Ok(users)) if batch != 2 => assert_eq!(users.len(), 250),
                other => panic!("{}: {other:?}", opened.name),
            }
        }
        assert_eq!(
            all(&*store).await.len(),
            33 + 3 * 250,
            "{}: the failed batch left nothing",
            opened.name
        );
    }
}

/// The directory the search cases run on: names, emails, bios, roles and
/// labels chosen so that each filter below matches a known set.
async fn search_directory(store: &dyn UserStore) -> Vec<usersvc::domain::User> {
    let people = [
        (
            "Ada Lovelace",
            "ada@example.com",
            Role::Admin,
            Some("Mathematician"),
            &[("team", "Core"), ("floor", "3")][..],
        ),
        (
            "Grace Hopper",
            "grace@navy.mil",
            Role::Editor,
            Some("COBOL and compilers"),
            &[("team", "core")][..],
        ),
        (
            "Alan Turing",
            "alan@example.org",
            Role::Viewer,
            None,
            &[("team", "crypto")][..],
        ),
        (
            "Ümit Smith",
            "umit@EXAMPLE.com",
            Role::Viewer,
            Some("50% off_sale"),
            &[][..],
        ),
        (
            "Zoë Smithson",
            "zoe@example.com",
            Role::Editor,
            None,
            &[("k8s.io/app", "web")][..],
        ),
    ];
    let mut created = Vec::new();
    for (name, email, role, bio, labels) in people {
        let user = NewUser {
            bio: bio.map(|b| Bio::parse(b.into()).unwrap()),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..new_user(name, email, role)
        };
        match store.create(user, None).await.unwrap() {
            Created::New(user) => created.push(user),
            Created::Replayed(_) => unreachable!(),
        }
    }
    created
}

async fn search_names(store: &dyn UserStore, filter: &str) -> Vec<String> {
    let filter = usersvc::domain::filter::parse(filter).unwrap();
    let page = store
        .list_page(PageQuery {
            filter: filter.clone(),
            order: usersvc::domain::Order::parse("name", Default::default()).unwrap(),
            limit: 100,
            ..Default::default()
        })
        .await
        .unwrap();
    let count = store.count(filter.as_ref()).await.unwrap();
    assert_eq!(
        count as usize,
        page.users.len(),
        "the count agrees with the page"
    );
    page.users
        .iter()
        .map(|u| u.name.as_str().to_owned())
        .collect()
}

#[tokio::test]
async fn filters_match_the_same_users_on_every_store() {
    let cases: &[(&str, &[&str])] = &[
        (
            "",
            &[
                "Ada Lovelace",
                "Alan Turing",
                "Grace Hopper",
                "Zoë Smithson",
                "Ümit Smith",
            ],
        ),
        (
            "email = \"*@example.com\"",
            &["Ada Lovelace", "Zoë Smithson", "Ümit Smith"],
        ),
        ("email = \"A*\"", &["Ada Lovelace", "Alan Turing"]),
        ("name:\"SMITH\"", &["Zoë Smithson", "Ümit Smith"]),
        ("name = \"ümit*\"", &["Ümit Smith"]),
        ("name = \"*smith\"", &["Ümit Smith"]),
        (
            "name != \"Ada Lovelace\" AND role = EDITOR",
            &["Grace Hopper", "Zoë Smithson"],
        ),
        (
            "role = USER_ROLE_VIEWER OR role = admin",
            &["Ada Lovelace", "Alan Turing", "Ümit Smith"],
        ),
        ("labels.team = \"CORE\"", &["Ada Lovelace", "Grace Hopper"]),
        (
            "labels:team",
            &["Ada Lovelace", "Alan Turing", "Grace Hopper"],
        ),
        ("-labels:team", &["Zoë Smithson", "Ümit Smith"]),
        (
            "labels.team != core",
            &["Alan Turing", "Zoë Smithson", "Ümit Smith"],
        ),
        ("labels.k8s.io/app = web", &["Zoë Smithson"]),
        ("labels.team = \"c*\" AND labels.floor:3", &["Ada Lovelace"]),
        ("bio:\"50%\"", &["Ümit Smith"]),
        ("bio:\"_\"", &["Ümit Smith"]),
        ("bio:cobol OR bio:math", &["Ada Lovelace", "Grace Hopper"]),
        (
            "NOT bio:\"o\"",
            &["Ada Lovelace", "Alan Turing", "Zoë Smithson"],
        ),
        ("name >= \"h\" AND name < \"zz\"", &["Zoë Smithson"]),
        (
            "created_at > 0 AND updated_at >= \"1970-01-01T00:00:00Z\"",
            &[
                "Ada Lovelace",
                "Alan Turing",
                "Grace Hopper",
                "Zoë Smithson",
                "Ümit Smith",
            ],
        ),
        ("created_at < \"2001-01-01T00:00:00Z\"", &[]),
        (
            "role = editor AND (name:grace OR name:zoë)",
            &["Grace Hopper", "Zoë Smithson"],
        ),
        (
            "role = editor AND name:grace OR name:zoë",
            &["Grace Hopper", "Zoë Smithson"],
        ),
        ("role = viewer name:ümit", &["Ümit Smith"]),
    ];
    for opened in stores().await {
        let store = &*opened.store;
        search_directory(store).await;
        for (filter, expected) in cases {
            assert_eq!(
                search_names(store, filter).await,
                *expected,
                "{}: {filter}",
                opened.name
            );
        }
        // Names sort by their folded form, in code point order: Ü after Z.
    }
}

#[tokio::test]
async fn every_order_pages_each_user_once_while_others_come_and_go() {
    for opened in stores().await {
        let store = &*opened.store;
        let batch: Vec<_> = (0..40)
            .map(|i| {
                // Ten users share each folded name ("Kim" and "kim" too):
                // the id alone orders them.
                let name = ["Kim", "kim", "Lee", "Ann"][i % 4];
                new_user(name, &format!("page{i:02}@example.com"), Role::Viewer)
            })
            .collect();
        let stayed: Vec<_> = store.create_many(batch).await.unwrap();
        let mut churn = 0;
        for order_by in [
            "",
            "name",
            "name desc",
            "email desc",
            "created_at desc, name",
            "created_at desc, name desc",
            "updated_at, email",
            "name, created_at desc",
            "name desc, created_at",
        ] {
            let order =
                usersvc::domain::Order::parse(order_by, usersvc::domain::Order::by_creation_time())
                    .unwrap();
            let mut seen: Vec<usersvc::domain::User> = Vec::new();
            let mut after: Option<Cursor> = None;
            loop {
                let page = store
                    .list_page(PageQuery {
                        order: order.clone(),
                        after: after.clone(),
                        limit: 7,
                        ..Default::default()
                    })
                    .await
                    .unwrap();
                seen.extend(
                    page.users
                        .iter()
                        .filter(|u| u.email.as_str().starts_with("page"))
                        .map(|u| usersvc::domain::User::clone(u)),
                );
                if page.users.len() < 7 {
                    break;
                }
                after = page.next;
                // Users come and go between pages, before and after the cursor.
                churn += 1;
                for name in ["Aaa", "Zzz", "Lee 50"] {
                    let user = create(
                        store,
                        name,
                        &format!("churn{churn}-{}@example.com", name.len()),
                    )
                    .await;
                    store.delete(&user.id, None).await.ok();
                    create(
                        store,
                        name,
                        &format!("churn{churn}-{name}@example.com").replace(' ', ""),
                    )
                    .await;
                }
            }
            let mut ids: Vec<_> = seen.iter().map(|u| u.id.clone()).collect();
            assert_eq!(
                ids.len(),
                stayed.len(),
                "{}: {order_by:?}: each user once",
                opened.name
            );
            ids.sort();
            ids.dedup();
            assert_eq!(
                ids.len(),
                stayed.len(),
                "{}: {order_by:?}: no user twice",
                opened.name
            );
            let keys: Vec<_> = seen.iter().map(|u| order.key_of(u)).collect();
            if !order.is_creation() {
                assert!(
                    keys.windows(2).all(|w| order.compare(&w[0], &w[1]).is_lt()),
                    "{}: {order_by:?}: in order",
                    opened.name
                );
                // Among users of one name, the id decides, in the
                // direction of the last field.
                let kims: Vec<&str> = seen
                    .iter()
                    .filter(|u| u.name.as_str().eq_ignore_ascii_case("kim"))
                    .map(|u| u.id.as_str())
                    .collect();
                if order_by == "name" || order_by == "name desc" {
                    let mut sorted = kims.clone();
                    sorted.sort();
                    if order.tie_descends() {
                        sorted.reverse();
                    }
                    assert_eq!(kims, sorted, "{}: {order_by:?}: ties by id", opened.name);
                }
            } else {
                let created: Vec<_> = stayed.iter().map(|u| u.id.clone()).collect();
                let listed: Vec<_> = seen.iter().map(|u| u.id.clone()).collect();
                assert_eq!(listed, created, "{}: creation order", opened.name);
            }
        }
    }
}

#[tokio::test]
async fn etags_change_with_each_version_and_refuse_a_stale_write() {
    for opened in stores().await {
        let store = &*opened.store;
        let ann = create(store, "Ann", "etag-ann@example.com").await;
        assert_eq!(ann.updated_at, ann.created_at);
        let first = ann.etag();
        let set = |key: &str, value: &str, etag: Option<String>| UserPatch {
            set_labels: [(key.to_owned(), value.to_owned())].into(),
            etag,
            ..Default::default()
        };
        let changed = store
            .update(&ann.id, set("team", "core", Some(first.clone())), false)
            .await
            .unwrap();
        assert_ne!(changed.etag(), first, "{}", opened.name);
        assert_eq!(changed.labels.get("team").map(String::as_str), Some("core"));
        assert!(changed.updated_at >= ann.created_at);
        assert_eq!(
            store.get(&ann.id).await.unwrap(),
            changed,
            "{}",
            opened.name
        );

        let stale = store
            .update(&ann.id, set("team", "other", Some(first.clone())), false)
            .await
            .unwrap_err();
        assert!(
            matches!(stale, StoreError::Changed(_)),
            "{}: {stale:?}",
            opened.name
        );
        let stale = store.delete(&ann.id, Some(&first)).await.unwrap_err();
        assert!(
            matches!(stale, StoreError::Changed(_)),
            "{}: {stale:?}",
            opened.name
        );
        assert_eq!(
            store.get(&ann.id).await.unwrap(),
            changed,
            "nothing changed"
        );

        // Removing a label, and a search that sees the change.
        let removed = store
            .update(
                &ann.id,
                UserPatch {
                    remove_labels: vec!["team".into()],
                    ..Default::default()
                },
                false,
            )
            .await
            .unwrap();
        assert!(removed.labels.is_empty());
        assert_eq!(
            search_names(store, "labels:team").await,
            Vec::<String>::new(),
            "{}",
            opened.name
        );

        // 64 labels at most, counted on the stored user.
        let many: usersvc::domain::Labels =
            (0..60).map(|i| (format!("k{i}"), "v".into())).collect();
        store
            .update(
                &ann.id,
                UserPatch {
                    set_labels: many,
                    ..Default::default()
                },
                false,
            )
            .await
            .unwrap();
        let more: usersvc::domain::Labels =
            (60..65).map(|i| (format!("k{i}"), "v".into())).collect();
        let refused = store
            .update(
                &ann.id,
                UserPatch {
                    set_labels: more,
                    ..Default::default()
                },
                false,
            )
            .await
            .unwrap_err();
        assert!(
            matches!(refused, StoreError::Invalid(_)),
            "{}: {refused:?}",
            opened.name
        );
        assert_eq!(store.get(&ann.id).await.unwrap().labels.len(), 60);

        let current = store.get(&ann.id).await.unwrap();
        let deleted = store.delete(&ann.id, Some(&current.etag())).await.unwrap();
        assert_eq!(deleted, current);
        assert_eq!(
            search_names(store, "labels:k1").await,
            Vec::<String>::new(),
            "{}",
            opened.name
        );
    }
}

#[tokio::test]
async fn an_admin_is_protected_by_the_write_itself() {
    for opened in stores().await {
        let store = &*opened.store;
        let boss = match store
            .create(
                new_user("Boss", "protected-boss@example.com", Role::Admin),
                None,
            )
            .await
            .unwrap()
        {
            Created::New(user) => user,
            Created::Replayed(_) => unreachable!(),
        };
        let rename = UserPatch {
            name: Some(UserName::parse("Renamed").unwrap()),
            ..Default::default()
        };
        let refused = store
            .update(&boss.id, rename.clone(), true)
            .await
            .unwrap_err();
        assert!(
            matches!(refused, StoreError::Admin(_)),
            "{}: {refused:?}",
            opened.name
        );
        assert_eq!(store.get(&boss.id).await.unwrap(), boss);
        let renamed = store.update(&boss.id, rename, false).await.unwrap();
        assert_eq!(renamed.name.as_str(), "Renamed");
    }
}

#[tokio::test]
async fn labels_of_a_bulk_creation_are_stored_and_searchable() {
    for opened in stores().await {
        let store = &*opened.store;
        // 130 users: a full 100-row statement, then a tail written row by row.
        let batch: Vec<_> = (0..130)
            .map(|i| NewUser {
                labels: [("shard".to_owned(), format!("S{}", i % 4))].into(),
                ..new_user(
                    &format!("Bulk {i:03}"),
                    &format!("bulk{i}@labels.test"),
                    Role::Viewer,
                )
            })
            .collect();
        let created = store.create_many(batch).await.unwrap();
        assert_eq!(created[129].labels["shard"], "S1");
        assert_eq!(
            store.get(&created[129].id).await.unwrap(),
            created[129],
            "{}",
            opened.name
        );
        let shard = usersvc::domain::filter::parse("labels.shard = s1").unwrap();
        assert_eq!(
            store.count(shard.as_ref()).await.unwrap(),
            33,
            "{}",
            opened.name
        );
        let labelled = usersvc::domain::filter::parse("labels:shard").unwrap();
        assert_eq!(
            store.count(labelled.as_ref()).await.unwrap(),
            130,
            "{}",
            opened.name
        );
        // Everyone, counted without a filter, follows creates and deletes.
        assert_eq!(store.count(None).await.unwrap(), 130, "{}", opened.name);
        store.delete(&created[7].id, None).await.unwrap();
        store.delete(&created[8].id, None).await.unwrap();
        assert_eq!(store.count(None).await.unwrap(), 128, "{}", opened.name);
        assert_eq!(
            store.count(labelled.as_ref()).await.unwrap(),
            128,
            "{}",
            opened.name
        );
    }
}

#[tokio::test]
async fn time_filters_split_users_at_their_bounds() {
    for opened in stores().await {
        let store = &*opened.store;
        let users = search_directory(store).await;
        let first = users.iter().map(|u| u.created_at).min().unwrap();
        let last = users.iter().map(|u| u.created_at).max().unwrap();
        let count = |filter: String| async move {
            let filter = usersvc::domain::filter::parse(&filter).unwrap();
            store.count(filter.as_ref()).await.unwrap()
        };
        let at_first = users.iter().filter(|u| u.created_at == first).count() as u64;
        let all = users.len() as u64;
        assert_eq!(
            count(format!("created_at < {first}")).await,
            0,
            "{}",
            opened.name
        );
        assert_eq!(
            count(format!("created_at >= {first}")).await,
            all,
            "{}",
            opened.name
        );
        assert_eq!(
            count(format!("created_at <= {first}")).await,
            at_first,
            "{}",
            opened.name
        );
        assert_eq!(
            count(format!("created_at > {first}")).await,
            all - at_first,
            "{}",
            opened.name
        );
        assert_eq!(
            count(format!("created_at = {first}")).await,
            at_first,
            "{}",
            opened.name
        );
        assert_eq!(
            count(format!("created_at != {first}")).await,
            all - at_first,
            "{}",
            opened.name
        );
        assert_eq!(
            count(format!("updated_at > {last}")).await,
            0,
            "{}",
            opened.name
        );
        // The same bound as RFC 3339, written two hours east of UTC.
        let east = humantime::format_rfc3339_seconds(
            std::time::UNIX_EPOCH + Duration::from_secs(first as u64 + 7200),
        )
        .to_string()
        .replace('Z', "+02:00");
        assert_eq!(
            count(format!("created_at >= \"{east}\"")).await,
            all,
            "{}",
            opened.name
        );
        assert_eq!(
            count(format!("created_at < \"{east}\"")).await,
            0,
            "{}",
            opened.name
        );
    }
}

#[tokio::test]
async fn page_tokens_outlive_a_restart_of_the_sql_stores() {
    for opened in stores().await {
        let key = opened.store.page_token_key();
        let again = opened.reopen().await.page_token_key();
        if opened.name == "memory" {
            // A new memory store is a new directory: its tokens are new too.
            continue;
        }
        assert_eq!(key, again, "{}: the key is kept with the data", opened.name);
        assert_ne!(key, [0; 32], "{}", opened.name);
    }
}

/// The payload's user name, to tell the changes apart.
fn name_of(event: &usersvc::events::Event) -> String {
    use prost::Message;
    usersvc::pb::User::decode(event.payload.clone())
        .unwrap()
        .name
}

/// Every store numbers its changes in order, keeps them across a restart,
/// and replays them from any point: all of them, or one user's.
#[tokio::test]
async fn changes_replay_from_any_point_with_the_same_numbers_after_a_restart() {
    for opened in stores().await {
        let (store, name) = (&*opened.store, opened.name);
        let before = store.sequence().await.unwrap();
        let mut bus = store.events().tap();
        bus.follow_all();
        let ann = create(store, "Ann", "ann@example.com").await;
        let bob = create(store, "Bob", "bob@example.com").await;
        let _ = store
            .create(new_user("Dup", "ANN@example.com", Role::Viewer), None)
            .await
            .unwrap_err();
        let patch = UserPatch {
            name: Some(UserName::parse("Ann 2").unwrap()),
            ..Default::default()
        };
        store.update(&ann.id, patch, false).await.unwrap();
        store.delete(&bob.id, None).await.unwrap();

        let all = store
            .changes(before, &store::Interest::All, 100)
            .await
            .unwrap();
        let seen: Vec<_> = all.iter().map(|e| (e.kind, name_of(e))).collect();
        assert_eq!(
            seen,
            [
                (EventKind::Created, "Ann".to_owned()),
                (EventKind::Created, "Bob".to_owned()),
                (EventKind::Updated, "Ann 2".to_owned()),
                (EventKind::Deleted, "Bob".to_owned()),
            ],
            "{name}"
        );
        let numbers: Vec<u64> = all.iter().map(|e| e.seq).collect();
        assert!(
            numbers.windows(2).all(|w| w[0] < w[1]),
            "{name}: {numbers:?}"
        );
        let newest = *numbers.last().unwrap();
        assert_eq!(store.sequence().await.unwrap(), newest, "{name}");

        let from_middle = store
            .changes(numbers[1], &store::Interest::All, 100)
            .await
            .unwrap();
        assert_eq!(
            from_middle.iter().map(|e| e.seq).collect::<Vec<_>>(),
            numbers[2..],
            "{name}"
        );
        let limited = store
            .changes(before, &store::Interest::All, 3)
            .await
            .unwrap();
        assert_eq!(limited.len(), 3, "{name}");
        let anns = store
            .changes(
                before,
                &store::Interest::Users(vec![ann.id.as_str().into()]),
                100,
            )
            .await
            .unwrap();
        assert_eq!(
            anns.iter().map(|e| (e.seq, e.kind)).collect::<Vec<_>>(),
            [
                (numbers[0], EventKind::Created),
                (numbers[2], EventKind::Updated)
            ],
            "{name}"
        );
        let newest_replay = store.changes(newest, &store::Interest::All, 100).await;
        assert!(newest_replay.unwrap().is_empty(), "{name}");
        match store.changes(newest + 1, &store::Interest::All, 100).await {
            Err(StoreError::ResumeAhead { after, newest: n }) => {
                assert_eq!((after, n), (newest + 1, newest), "{name}");
            }
            other => panic!("{name}: {other:?}"),
        }

        if name == "memory" {
            continue;
        }
        let reopened = opened.reopen().await;
        assert_eq!(
            reopened.events().last_seq(),
            newest,
            "{name}: the bus starts after the newest"
        );
        let again = reopened
            .changes(before, &store::Interest::All, 100)
            .await
            .unwrap();
        assert_eq!(again, all, "{name}: the same changes, the same numbers");
        let carl = create(&*reopened, "Carl", "carl@example.com").await;
        let next = reopened
            .changes(newest, &store::Interest::All, 100)
            .await
            .unwrap();
        assert_eq!(next.len(), 1, "{name}");
        assert!(
            next[0].seq > newest && next[0].user_id == carl.id.as_str(),
            "{name}"
        );
    }
}

/// Changes past the retention are pruned, and a resume point before what
/// is kept is refused, naming the oldest change kept: never a replay with
/// a hole in it.
#[tokio::test]
async fn a_resume_point_older_than_the_retention_is_refused() {
    let keep_three = StoreOptions {
        event_retention: "3".parse().unwrap(),
        ..StoreOptions::default()
    };
    for opened in stores().await {
        let name = opened.name;
        // The memory store prunes as it writes; the SQL stores when they
        // open, and every few seconds after.
        let store = if name == "memory" {
            store::open("memory", &keep_three).await.unwrap()
        } else {
            Arc::clone(&opened.store)
        };
        let before = store.sequence().await.unwrap();
        for n in 0..6 {
            create(&*store, &format!("U{n}"), &format!("u{n}@example.com")).await;
        }
        let store = if name == "memory" {
            store
        } else {
            store::open(&opened.url, &keep_three).await.unwrap()
        };
        let kept = store
            .changes(before + 3, &store::Interest::All, 100)
            .await
            .unwrap();
        assert_eq!(
            kept.iter().map(name_of).collect::<Vec<_>>(),
            ["U3", "U4", "U5"],
            "{name}"
        );
        match store.changes(before + 2, &store::Interest::All, 100).await {
            Err(error @ StoreError::ResumeTooOld { .. }) => {
                assert_eq!(
                    error.to_string(),
                    format!(
                        "resume point {} is older than the oldest kept change {}; list again",
                        before + 2,
                        kept[0].seq
                    ),
                    "{name}"
                );
            }
            other => panic!("{name}: {other:?}"),
        }
    }
}
