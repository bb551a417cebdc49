//! The soak: resumable watches at scale, through a database restart and a
//! replica's death, checked change by change.
//!
//! It starts two replicas of `usersvc serve` on one PostgreSQL schema of
//! its own, opens the watchers (a few on `*`, the rest on ten seeded users
//! each, as cache invalidation does), spread over both replicas, and writes
//! creates, updates and deletes at a steady rate. At a third of the run it
//! restarts PostgreSQL; at two thirds it kills one replica with SIGKILL and
//! starts it again, while that replica's watchers resume on the other.
//!
//! At the end it reads the outbox, the directory's history, and checks:
//! every acknowledged write is in it; and each watcher received every
//! change it follows after the point it started from, once, in order.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::{Duration, Instant};

use prost::Message;
use rand::Rng;
use serde::Serialize;
use tokio::sync::Mutex;
use tonic::Status;

use crate::client::{Client, ClientConfig, ResumingWatch, RetryPolicy, WatchItem};
use crate::pb;

/// What to run.
#[derive(Clone, Debug)]
pub struct Soak {
    /// The `usersvc` binary the replicas run.
    pub binary: PathBuf,
    /// A PostgreSQL database the soak makes a schema of its own in.
    pub postgres: String,
    pub watchers: usize,
    /// Of the watchers, those that follow every user.
    pub star_watchers: usize,
    /// Users each of the other watchers follows.
    pub users_per_watcher: usize,
    /// Users created before the run, for the watchers and updates.
    pub seed_users: usize,
    /// Creates, updates and deletes per second, all told.
    pub rate: u32,
    pub duration: Duration,
    /// When RSS is first read, after the start.
    pub warmup: Duration,
    /// The shell command that restarts PostgreSQL.
    pub pg_restart: String,
    /// Where the replicas' logs go.
    pub log_dir: PathBuf,
}

/// What the soak found.
#[derive(Clone, Debug, Default, Serialize)]
pub struct SoakReport {
    pub writes_acknowledged: u64,
    /// Acknowledged writes per second over the run.
    pub writes_per_second: f64,
    /// Writes that failed, by code: while PostgreSQL or a replica was down.
    pub writes_failed: HashMap<String, u64>,
    /// Acknowledged writes missing from the history: must be 0.
    pub writes_lost: u64,
    pub changes_in_history: u64,
    pub watchers: usize,
    pub deliveries: u64,
    pub missed: u64,
    /// Changes a watcher received that it does not follow, or that the
    /// history does not hold.
    pub unexpected: u64,
    pub duplicated: u64,
    pub reordered: u64,
    /// Watchers with a miss, a duplicate or a reordering.
    pub watchers_wrong: usize,
    /// Watchers that ended with an error they could not resume from.
    pub watchers_failed: usize,
    pub reconnects: u64,
    /// From a stream breaking to its replacement being open, the longest.
    pub longest_resume_ms: u64,
    pub pg_restart_ms: u64,
    /// RSS in KiB of each replica, every second: (seconds, first, second).
    pub rss_kib: Vec<(u64, u64, u64)>,
    /// RSS after the warm-up, and just before the kill: each replica's.
    pub rss_after_warmup_kib: [u64; 2],
    pub rss_before_kill_kib: [u64; 2],
    /// The first few watchers that went wrong, to look into.
    pub wrong: Vec<WrongWatcher>,
}

/// A watcher that missed, repeated or reordered changes.
#[derive(Clone, Debug, Default, Serialize)]
pub struct WrongWatcher {
    /// `*`, or how many users it follows.
    pub follows: String,
    /// The replica it started on: 0 or 1 (the one killed is 0).
    pub home: usize,
    pub start: i64,
    pub received: usize,
    pub first_received: Option<i64>,
    pub last_received: Option<i64>,
    pub missed: u64,
    pub first_missed: Option<i64>,
    pub last_missed: Option<i64>,
    pub duplicated: u64,
    pub reordered: u64,
    pub reconnects: u64,
}

impl SoakReport {
    /// Whether every watcher got every change once, in order, and no
    /// acknowledged write was lost.
    pub fn passed(&self) -> bool {
        self.writes_lost == 0
            // The kill must have made watchers resume, or nothing was shown.
            && self.reconnects > 0
            && self.missed == 0
            && self.unexpected == 0
            && self.duplicated == 0
            && self.reordered == 0
            && self.watchers_failed == 0
    }
}

/// One replica: a child process on a port of its own.
struct Replica {
    port: u16,
    child: Child,
}

/// A write the server acknowledged, as the history must show it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Acked {
    kind: &'static str,
    user_id: String,
    etag: String,
}

/// What one watcher saw.
#[derive(Debug, Default)]
struct Seen {
    /// What it follows: user ids, or `*`.
    user_ids: Vec<String>,
    home: usize,
    /// The sequence it started after.
    start: i64,
    /// Changes in the order they came, while they came in order.
    received: Vec<i64>,
    duplicated: u64,
    reordered: u64,
    reconnects: u64,
    longest_resume: Duration,
    failed: Option<String>,
}

fn free_port() -> Result<u16, String> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    Ok(listener.local_addr().map_err(|e| e.to_string())?.port())
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|line| line.starts_with("VmRSS:"))
                .and_then(|line| line.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

impl Soak {
    fn spawn(
        &self,
        name: &str,
        port: u16,
        store: &str,
        secret: &std::path::Path,
    ) -> Result<Replica, String> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_dir.join(format!("replica-{name}.log")))
            .map_err(|e| format!("replica log: {e}"))?;
        let streams = (self.watchers + 100).to_string();
        let child = Command::new(&self.binary)
            .args([
                "serve",
                "--addr",
                &format!("127.0.0.1:{port}"),
                "--store",
                store,
            ])
            .arg("--jwt-secret-file")
            .arg(secret)
            .args(["--rate-limit", "0", "--console", "false"])
            .args(["--max-watch-streams-per-caller", &streams])
            .args(["--max-watch-streams", &streams])
            .args(["--max-concurrent-streams", "1000"])
            .args(["--max-connections-per-client", "1000"])
            // Every change is kept, so that the end can check against all.
            .args(["--event-retention", "100000000,24h"])
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", self.binary.display()))?;
        Ok(Replica { port, child })
    }

    /// Runs the soak; an error is a soak that could not run, not one that
    /// found a miss (see `SoakReport::passed`).
    pub async fn run(&self) -> Result<SoakReport, String> {
        use sqlx::Connection;
        let schema = format!(
            "soak_{}_{}",
            std::process::id(),
            crate::clock::unix_millis()
        );
        let mut admin = sqlx::PgConnection::connect(&self.postgres)
            .await
            .map_err(|e| format!("PostgreSQL at {}: {e}", self.postgres))?;
        sqlx::query(&format!("CREATE SCHEMA {schema}"))
            .execute(&mut admin)
            .await
            .map_err(|e| e.to_string())?;
        let separator = if self.postgres.contains('?') {
            '&'
        } else {
            '?'
        };
        let store = format!(
            "{}{separator}options=-c%20search_path%3D{schema}",
            self.postgres
        );
        let outcome = self.run_on(&store).await;
        let _ = sqlx::query(&format!("DROP SCHEMA {schema} CASCADE"))
            .execute(&mut admin)
            .await;
        outcome
    }

    async fn run_on(&self, store: &str) -> Result<SoakReport, String> {
        std::fs::create_dir_all(&self.log_dir).map_err(|e| e.to_string())?;
        let secret_bytes: String = (0..32)
            .map(|_| format!("{:02x}", rand::random::<u8>()))
            .collect();
        for log in ["replica-a.log", "replica-b.log"] {
            let _ = std::fs::remove_file(self.log_dir.join(log));
        }
        let secret_path = self.log_dir.join("jwt-secret");
        {
            use std::io::Write;
            use std::os::unix::fs::OpenOptionsExt;
            let _ = std::fs::remove_file(&secret_path);
            std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&secret_path)
                .and_then(|mut file| file.write_all(secret_bytes.as_bytes()))
                .map_err(|e| format!("the soak's JWT secret: {e}"))?;
        }
        let secret = crate::auth::Secret::from_bytes(secret_bytes.into_bytes());
        let token = crate::auth::mint(
            &secret,
            "soak",
            crate::domain::Role::Admin,
            self.duration + Duration::from_secs(3600),
            &Default::default(),
        )
        .map_err(|e| e.to_string())?;
        let ports = [free_port()?, free_port()?];
        let mut replicas = vec![
            self.spawn("a", ports[0], store, &secret_path)?,
            self.spawn("b", ports[1], store, &secret_path)?,
        ];
        let outcome = self.drive(store, &token, &mut replicas, &secret_path).await;
        for replica in &mut replicas {
            let _ = replica.child.kill();
            let _ = replica.child.wait();
        }
        outcome
    }

    async fn drive(
        &self,
        store: &str,
        token: &str,
        replicas: &mut [Replica],
        secret_path: &std::path::Path,
    ) -> Result<SoakReport, String> {
        let client = |port: u16| {
            let mut config = ClientConfig::new(format!("http://127.0.0.1:{port}"));
            config.token = Some(token.to_owned());
            config.timeout = None;
            config.retry = RetryPolicy {
                max_attempts: 1,
                ..RetryPolicy::default()
            };
            Client::new(config).map_err(|e| e.to_string())
        };
        let writers = [client(replicas[0].port)?, client(replicas[1].port)?];
        for (writer, name) in writers.iter().zip(["a", "b"]) {
            ready(writer).await.map_err(|error| {
                let log = std::fs::read_to_string(self.log_dir.join(format!("replica-{name}.log")))
                    .unwrap_or_default();
                format!("{error}; its log: {}", log.trim())
            })?;
        }
        let seeded = seed(&writers[0], self.seed_users).await?;
        let report = Arc::new(Mutex::new(SoakReport {
            watchers: self.watchers,
            ..SoakReport::default()
        }));

        // Watchers: a few on `*`, the rest on users of the seed; each with
        // its own replica first and the other second. The `*` watchers get
        // connections of their own: one connection task of this process
        // reading every change for many of them fell behind the server.
        // The others share, 500 to a connection.
        let (stop_tx, stop) = tokio::sync::watch::channel(false);
        let mut pools: [Vec<Client>; 2] = [Vec::new(), Vec::new()];
        let mut watchers = Vec::with_capacity(self.watchers);
        // What each watcher follows, and the last change it received.
        let mut followed = Vec::with_capacity(self.watchers);
        let opening = Arc::new(tokio::sync::Semaphore::new(64));
        let (opened_tx, mut opened) = tokio::sync::mpsc::unbounded_channel::<()>();
        for w in 0..self.watchers {
            let home = w % 2;
            for side in 0..2 {
                if pools[side].len() * 500 <= w / 2 {
                    pools[side].push(client(replicas[side].port)?);
                }
            }
            let clients = if w < self.star_watchers {
                vec![
                    client(replicas[home].port)?,
                    client(replicas[1 - home].port)?,
                ]
            } else {
                vec![
                    pools[home].last().cloned().expect("made above"),
                    pools[1 - home].last().cloned().expect("made above"),
                ]
            };
            let user_ids = if w < self.star_watchers {
                vec!["*".to_owned()]
            } else {
                let mut rng = rand::rng();
                (0..self.users_per_watcher)
                    .map(|_| seeded[rng.random_range(0..seeded.len())].clone())
                    .collect()
            };
            let progress = Arc::new(AtomicI64::new(0));
            followed.push((user_ids.clone(), Arc::clone(&progress)));
            let (stop, opening, opened) = (stop.clone(), Arc::clone(&opening), opened_tx.clone());
            watchers.push(tokio::spawn(async move {
                let permit = opening.acquire_owned().await;
                watcher(clients, home, user_ids, stop, permit.ok(), opened, progress).await
            }));
        }
        // Every watcher is open before the writes start.
        drop(opened_tx);
        for _ in 0..self.watchers {
            if opened.recv().await.is_none() {
                break;
            }
        }

        let started = Instant::now();
        let writing = Arc::new(AtomicBool::new(true));
        let acked = Arc::new(Mutex::new(Vec::<Acked>::new()));
        let writer = tokio::spawn(write(
            writers.clone(),
            seeded.clone(),
            self.rate,
            Arc::clone(&writing),
            Arc::clone(&acked),
            Arc::clone(&report),
        ));

        // The run's schedule, and RSS every second.
        let mut restarted_pg = false;
        let mut killed = false;
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        while started.elapsed() < self.duration {
            tick.tick().await;
            let at = started.elapsed();
            let rss = [
                rss_kib(replicas[0].child.id()),
                rss_kib(replicas[1].child.id()),
            ];
            {
                let mut report = report.lock().await;
                report.rss_kib.push((at.as_secs(), rss[0], rss[1]));
                if report.rss_after_warmup_kib == [0, 0] && at >= self.warmup {
                    report.rss_after_warmup_kib = rss;
                }
            }
            if !restarted_pg && at >= self.duration / 3 {
                restarted_pg = true;
                let began = Instant::now();
                let restart = self.pg_restart.clone();
                let status = tokio::task::spawn_blocking(move || {
                    Command::new("sh").args(["-c", &restart]).status()
                })
                .await
                .map_err(|e| e.to_string())?
                .map_err(|e| format!("cannot run {:?}: {e}", self.pg_restart))?;
                if !status.success() {
                    return Err(format!("{:?} failed: {status}", self.pg_restart));
                }
                report.lock().await.pg_restart_ms = began.elapsed().as_millis() as u64;
            }
            if !killed && at >= self.duration * 2 / 3 {
                killed = true;
                report.lock().await.rss_before_kill_kib = rss;
                // SIGKILL: no graceful end for its streams.
                replicas[0].child.kill().map_err(|e| e.to_string())?;
                let _ = replicas[0].child.wait();
                tokio::time::sleep(Duration::from_secs(1)).await;
                let port = replicas[0].port;
                replicas[0] = self.spawn("a", port, store, secret_path)?;
            }
        }
        writing.store(false, Ordering::SeqCst);
        writer.await.map_err(|e| e.to_string())?;
        let wrote_for = started.elapsed();
        // Every watcher gets until it has received the last change it
        // follows, or a minute, before it is stopped and checked.
        let history = history(store).await?;
        let mut newest: HashMap<&str, i64> = HashMap::new();
        for change in &history {
            newest.insert(change.acked.user_id.as_str(), change.seq);
        }
        let last_of_all = history.last().map_or(0, |change| change.seq);
        let caught_up = |(user_ids, progress): &(Vec<String>, Arc<AtomicI64>)| {
            let last = if user_ids.iter().any(|id| id == "*") {
                last_of_all
            } else {
                user_ids
                    .iter()
                    .filter_map(|id| newest.get(id.as_str()))
                    .copied()
                    .max()
                    .unwrap_or(0)
            };
            progress.load(Ordering::Relaxed) >= last
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline && !followed.iter().all(caught_up) {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let _ = stop_tx.send(true);
        let mut seen = Vec::with_capacity(watchers.len());
        for watcher in watchers {
            seen.push(watcher.await.map_err(|e| e.to_string())?);
        }

        let mut report = Arc::try_unwrap(report)
            .map_err(|_| "the writer still holds the report".to_owned())?
            .into_inner();
        check(&mut report, &acked.lock().await, &history, &seen);
        report.writes_per_second = report.writes_acknowledged as f64 / wrote_for.as_secs_f64();
        Ok(report)
    }
}

/// Waits until `client`'s replica answers.
async fn ready(client: &Client) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match client
            .search_users(pb::SearchUsersRequest {
                page_size: 1,
                ..Default::default()
            })
            .await
        {
            Ok(_) => return Ok(()),
            Err(status) if Instant::now() > deadline => {
                return Err(format!("a replica did not start: {}", status.message()));
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// Creates `count` users in bulk; returns their ids.
async fn seed(client: &Client, count: usize) -> Result<Vec<String>, String> {
    let mut ids = Vec::with_capacity(count);
    let run = crate::clock::unix_millis();
    while ids.len() < count {
        let batch: Vec<pb::CreateUserRequest> = (ids.len()..count.min(ids.len() + 1000))
            .map(|n| pb::CreateUserRequest {
                name: format!("Seed {n}"),
                email: format!("seed-{run}-{n}@example.com"),
                role: pb::UserRole::Viewer as i32,
                ..Default::default()
            })
            .collect();
        let created = client
            .bulk_create_users(tokio_stream::iter(batch))
            .await
            .map_err(|s| format!("seeding: {}", s.message()))?;
        ids.extend(created.users.into_iter().map(|u| u.id));
    }
    Ok(ids)
}

/// One watcher, until `stop`: follows `user_ids`, resuming on the next
/// replica whenever its stream breaks.
async fn watcher(
    clients: Vec<Client>,
    home: usize,
    user_ids: Vec<String>,
    mut stop: tokio::sync::watch::Receiver<bool>,
    opening: Option<tokio::sync::OwnedSemaphorePermit>,
    opened: tokio::sync::mpsc::UnboundedSender<()>,
    progress: Arc<AtomicI64>,
) -> Seen {
    let mut seen = Seen {
        user_ids: user_ids.clone(),
        home,
        ..Seen::default()
    };
    let mut watch = loop {
        match ResumingWatch::start_any(clients.clone(), user_ids.clone(), 0).await {
            Ok(watch) => break watch,
            Err(status) if *stop.borrow() => {
                seen.failed = Some(status.message().to_owned());
                return seen;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    };
    seen.start = watch.last_sequence();
    progress.store(seen.start, Ordering::Relaxed);
    drop(opening);
    let _ = opened.send(());
    loop {
        tokio::select! {
            item = watch.next() => match item {
                Ok(WatchItem::Event(event)) if event.sequence > 0 => {
                    let last = seen.received.last().copied().unwrap_or(seen.start);
                    if event.sequence > last {
                        seen.received.push(event.sequence);
                        progress.store(event.sequence, Ordering::Relaxed);
                    } else if event.sequence <= seen.start || seen.received.binary_search(&event.sequence).is_ok() {
                        seen.duplicated += 1;
                    } else {
                        seen.reordered += 1;
                    }
                }
                Ok(WatchItem::Event(_)) => {}
                Ok(WatchItem::Reconnected { took, .. }) => {
                    seen.reconnects += 1;
                    seen.longest_resume = seen.longest_resume.max(took);
                }
                Err(status) => {
                    seen.failed = Some(describe(&status));
                    return seen;
                }
            },
            _ = stop.changed() => return seen,
        }
    }
}

fn describe(status: &Status) -> String {
    format!(
        "{}: {}",
        crate::error::code_name(status.code()),
        status.message()
    )
}

/// Writes at `rate` per second until `writing` is cleared: half updates of
/// seeded users, three in ten creates, two in ten deletes of users it
/// created; alternately on each replica.
async fn write(
    clients: [Client; 2],
    seeded: Vec<String>,
    rate: u32,
    writing: Arc<AtomicBool>,
    acked: Arc<Mutex<Vec<Acked>>>,
    report: Arc<Mutex<SoakReport>>,
) {
    let created = Arc::new(Mutex::new(Vec::<String>::new()));
    let in_flight = Arc::new(tokio::sync::Semaphore::new(256));
    let mut tick = tokio::time::interval(Duration::from_secs(1) / rate.max(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut tasks = tokio::task::JoinSet::new();
    for n in 0u64.. {
        if !writing.load(Ordering::SeqCst) {
            break;
        }
        tick.tick().await;
        let Ok(permit) = Arc::clone(&in_flight).acquire_owned().await else {
            break;
        };
        let client = clients[(n % 2) as usize].clone();
        let (roll, pick) = {
            let mut rng = rand::rng();
            (rng.random_range(0..10), rng.random_range(0..seeded.len()))
        };
        let seeded_id = seeded[pick].clone();
        let (created, acked, report) = (
            Arc::clone(&created),
            Arc::clone(&acked),
            Arc::clone(&report),
        );
        tasks.spawn(async move {
            let _permit = permit;
            let deletable = if roll >= 8 {
                created.lock().await.pop()
            } else {
                None
            };
            let outcome = match (roll, deletable) {
                (0..5, _) => client
                    .update_user(pb::UpdateUserRequest {
                        user_id: seeded_id,
                        bio: Some(format!("soak write {n}")),
                        ..Default::default()
                    })
                    .await
                    .map(|user| ("user_updated", user)),
                (_, Some(id)) => client
                    .delete_user(&id)
                    .await
                    .map(|user| ("user_deleted", user)),
                _ => client
                    .create_user(
                        pb::CreateUserRequest {
                            name: format!("Soak {n}"),
                            email: format!("soak-{}-{n}@example.com", crate::clock::unix_millis()),
                            role: pb::UserRole::Viewer as i32,
                            ..Default::default()
                        },
                        None,
                    )
                    .await
                    .map(|user| ("user_created", user)),
            };
            match outcome {
                Ok((kind, user)) => {
                    if kind == "user_created" {
                        created.lock().await.push(user.id.clone());
                    }
                    acked.lock().await.push(Acked {
                        kind,
                        user_id: user.id,
                        etag: user.etag,
                    });
                }
                Err(status) => {
                    let code = crate::error::code_name(status.code()).to_owned();
                    *report.lock().await.writes_failed.entry(code).or_default() += 1;
                }
            }
        });
        while tasks.try_join_next().is_some() {}
    }
    while tasks.join_next().await.is_some() {}
}

/// One change of the history.
struct Change {
    seq: i64,
    acked: Acked,
}

/// The whole outbox, in order.
async fn history(store: &str) -> Result<Vec<Change>, String> {
    use sqlx::{Connection, Row};
    let mut connection = sqlx::PgConnection::connect(store)
        .await
        .map_err(|e| e.to_string())?;
    let rows = sqlx::query("SELECT seq, kind, user_id, payload FROM events ORDER BY seq")
        .fetch_all(&mut connection)
        .await
        .map_err(|e| e.to_string())?;
    let mut changes = Vec::with_capacity(rows.len());
    for row in rows {
        let kind: String = row.try_get(1).map_err(|e| e.to_string())?;
        let payload: Vec<u8> = row.try_get(3).map_err(|e| e.to_string())?;
        let user = pb::User::decode(payload.as_slice()).map_err(|e| e.to_string())?;
        let kind = match kind.as_str() {
            "user_created" => "user_created",
            "user_updated" => "user_updated",
            _ => "user_deleted",
        };
        changes.push(Change {
            seq: row.try_get(0).map_err(|e| e.to_string())?,
            acked: Acked {
                kind,
                user_id: row.try_get(2).map_err(|e| e.to_string())?,
                etag: user.etag,
            },
        });
    }
    Ok(changes)
}

/// Checks the acknowledged writes and every watcher against the history.
fn check(report: &mut SoakReport, acked: &[Acked], history: &[Change], seen: &[Seen]) {
    report.writes_acknowledged = acked.len() as u64;
    report.changes_in_history = history.len() as u64;
    let recorded: std::collections::HashSet<&Acked> = history.iter().map(|c| &c.acked).collect();
    report.writes_lost = acked.iter().filter(|a| !recorded.contains(a)).count() as u64;
    let everything: Vec<i64> = history.iter().map(|c| c.seq).collect();
    let mut by_user: HashMap<&str, Vec<i64>> = HashMap::new();
    for change in history {
        by_user
            .entry(change.acked.user_id.as_str())
            .or_default()
            .push(change.seq);
    }
    for watcher in seen {
        report.deliveries += watcher.received.len() as u64;
        report.duplicated += watcher.duplicated;
        report.reordered += watcher.reordered;
        report.reconnects += watcher.reconnects;
        report.longest_resume_ms = report
            .longest_resume_ms
            .max(watcher.longest_resume.as_millis() as u64);
        if watcher.failed.is_some() {
            report.watchers_failed += 1;
        }
        let mut expected: Vec<i64> = if watcher.user_ids.iter().any(|id| id == "*") {
            everything.clone()
        } else {
            let mut ids: Vec<&str> = watcher.user_ids.iter().map(String::as_str).collect();
            ids.sort_unstable();
            ids.dedup();
            ids.iter()
                .flat_map(|id| by_user.get(id).into_iter().flatten().copied())
                .collect()
        };
        expected.retain(|&seq| seq > watcher.start);
        expected.sort_unstable();
        let missing: Vec<i64> = expected
            .iter()
            .copied()
            .filter(|seq| watcher.received.binary_search(seq).is_err())
            .collect();
        let missed = missing.len() as u64;
        report.missed += missed;
        let unexpected = watcher
            .received
            .iter()
            .filter(|seq| expected.binary_search(seq).is_err())
            .count() as u64;
        report.unexpected += unexpected;
        if missed > 0 || unexpected > 0 || watcher.duplicated > 0 || watcher.reordered > 0 {
            report.watchers_wrong += 1;
            if report.wrong.len() < 20 {
                report.wrong.push(WrongWatcher {
                    follows: if watcher.user_ids.iter().any(|id| id == "*") {
                        "*".to_owned()
                    } else {
                        format!("{} users", watcher.user_ids.len())
                    },
                    home: watcher.home,
                    start: watcher.start,
                    received: watcher.received.len(),
                    first_received: watcher.received.first().copied(),
                    last_received: watcher.received.last().copied(),
                    missed,
                    first_missed: missing.first().copied(),
                    last_missed: missing.last().copied(),
                    duplicated: watcher.duplicated,
                    reordered: watcher.reordered,
                    reconnects: watcher.reconnects,
                });
            }
        }
    }
}
