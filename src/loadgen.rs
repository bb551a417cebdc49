//! The load generator behind `usersvc bench`: drives any server that speaks
//! our .proto with every RPC kind, and measures throughput, latency
//! percentiles and errors by code.
//!
//! Each connection is its own HTTP/2 channel carrying `concurrency` callers
//! in a closed loop (a caller sends its next request when the last one is
//! answered). A warm-up runs first and is not counted.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio_stream::StreamExt;
use tonic::Status;

use crate::client::{Client, ClientConfig, RetryPolicy};
use crate::pb;

pub mod soak;
pub mod wire;
pub use wire::Protocol;

/// What to measure.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Scenario {
    /// Unary GetUser of seeded users.
    Get,
    /// Unary CreateUser of new users.
    Create,
    /// ListUsers of the seeded users, counted in users received.
    List,
    /// BulkCreateUsers in batches, counted in users acknowledged.
    Bulk,
    /// WatchUserEvents fan-out: watchers, and a writer at a fixed rate;
    /// latency is from a write's start to each watcher's receipt.
    Watch,
}

/// How hard and how long.
#[derive(Clone, Debug)]
pub struct Load {
    pub scenario: Scenario,
    pub connections: usize,
    /// Callers per connection.
    pub concurrency: usize,
    pub duration: Duration,
    /// Calls to measure after the warm-up; the run then ends at this count
    /// rather than after `duration`.
    pub count: Option<u64>,
    pub warmup: Duration,
    /// Users created before a get or list run.
    pub seed_users: usize,
    /// Users per BulkCreateUsers call.
    pub batch: usize,
    /// Watchers, and writes per second, for the watch scenario.
    pub watchers: usize,
    pub write_rate: u32,
    /// Watch streams opened before any scenario and held through it, each
    /// subscribed to a user id that no write touches: what an idle watcher
    /// costs the calls around it.
    pub idle_watchers: usize,
    /// The protocol GetUser is called over.
    pub protocol: Protocol,
}

/// What a run measured.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub scenario: Scenario,
    pub protocol: Protocol,
    /// Bytes on the wire per call, both ways, headers and framing included;
    /// measured for the protocols other than `grpc`.
    pub bytes_per_call: Option<f64>,
    /// Calls completed (OK or not) after the warm-up.
    pub calls: u64,
    pub seconds: f64,
    pub calls_per_second: f64,
    /// Users received (list), acknowledged (bulk) or delivered (watch) per second.
    pub items_per_second: f64,
    pub latency_us: Percentiles,
    /// Failed calls by gRPC code.
    pub errors: BTreeMap<String, u64>,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct Percentiles {
    pub p50: u64,
    pub p90: u64,
    pub p99: u64,
    pub max: u64,
}

impl Percentiles {
    fn of(mut samples: Vec<u64>) -> Self {
        if samples.is_empty() {
            return Self::default();
        }
        samples.sort_unstable();
        let at = |q: f64| samples[((samples.len() - 1) as f64 * q).round() as usize];
        Self {
            p50: at(0.50),
            p90: at(0.90),
            p99: at(0.99),
            max: *samples.last().expect("not empty"),
        }
    }
}

/// One caller's tally.
#[derive(Default)]
struct Tally {
    latencies_us: Vec<u64>,
    items: u64,
    errors: BTreeMap<String, u64>,
}

impl Tally {
    fn record(&mut self, started: Instant, outcome: Result<u64, Status>) {
        self.latencies_us.push(started.elapsed().as_micros() as u64);
        match outcome {
            Ok(items) => self.items += items,
            Err(status) => {
                *self
                    .errors
                    .entry(crate::error::code_name(status.code()).to_owned())
                    .or_default() += 1
            }
        }
    }

    fn merge(&mut self, other: Tally) {
        self.latencies_us.extend(other.latencies_us);
        self.items += other.items;
        for (code, count) in other.errors {
            *self.errors.entry(code).or_default() += count;
        }
    }
}

fn client(config: &ClientConfig) -> Result<Client, String> {
    let mut config = config.clone();
    config.retry = RetryPolicy {
        max_attempts: 1,
        ..RetryPolicy::default()
    };
    Client::new(config).map_err(|e| e.to_string())
}

/// A new user with an address no other run uses.
fn new_user(run: u64, n: u64) -> pb::CreateUserRequest {
    pb::CreateUserRequest {
        name: format!("Bench user {n}"),
        email: format!("bench-{run}-{n}@example.com"),
        role: pb::UserRole::Viewer as i32,
        bio: None,
        labels: Default::default(),
    }
}

/// The number `n` of the write that made the user `payload` encodes, from
/// its name (`Bench user {n}`, field 2), read in place: no decoding of the
/// whole user, no allocation.
fn write_number(mut payload: &[u8]) -> Option<usize> {
    use prost::encoding::{WireType, decode_key, decode_varint};
    while !payload.is_empty() {
        let (tag, wire_type) = decode_key(&mut payload).ok()?;
        match wire_type {
            WireType::Varint => {
                decode_varint(&mut payload).ok()?;
            }
            WireType::LengthDelimited => {
                let len = usize::try_from(decode_varint(&mut payload).ok()?).ok()?;
                let (value, rest) = payload.split_at_checked(len)?;
                if tag == 2 {
                    let name = std::str::from_utf8(value).ok()?;
                    return name.strip_prefix("Bench user ")?.parse().ok();
                }
                payload = rest;
            }
            WireType::SixtyFourBit => payload = payload.get(8..)?,
            WireType::ThirtyTwoBit => payload = payload.get(4..)?,
            _ => return None,
        }
    }
    None
}

/// Creates `count` users in batches and returns their ids.
async fn seed(client: &Client, run: u64, count: usize) -> Result<Vec<String>, String> {
    let mut ids = Vec::with_capacity(count);
    for start in (0..count).step_by(10_000) {
        let batch: Vec<_> = (start..count.min(start + 10_000))
            .map(|n| new_user(run, n as u64))
            .collect();
        let response = client
            .bulk_create_users(tokio_stream::iter(batch))
            .await
            .map_err(|s| format!("seeding failed: {}", s.message()))?;
        ids.extend(response.users.into_iter().map(|u| u.id));
    }
    Ok(ids)
}

/// Runs `load` against the server `config` names.
pub async fn run(config: &ClientConfig, load: &Load) -> Result<Report, String> {
    let run_id = crate::clock::unix_millis() as u64;
    if load.protocol != Protocol::Grpc && load.scenario != Scenario::Get {
        return Err("--protocol is for the get scenario".into());
    }
    let setup = client(config)?;
    let _idle = idle_watchers(config, load.idle_watchers).await?;
    if load.scenario == Scenario::Watch {
        return watch(config, load, &setup, run_id).await;
    }
    let ids = Arc::new(match load.scenario {
        Scenario::Get | Scenario::List => seed(&setup, run_id, load.seed_users.max(1)).await?,
        _ => Vec::new(),
    });
    let counter = Arc::new(AtomicU64::new(1_000_000));
    // Calls started after the warm-up, against `load.count`.
    let measured = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let measure_from = start + load.warmup;
    let stop = measure_from + load.duration;
    let wire_bytes = Arc::new(AtomicU64::new(0));
    let bytes_at_start = {
        let wire_bytes = Arc::clone(&wire_bytes);
        tokio::spawn(async move {
            tokio::time::sleep_until(measure_from.into()).await;
            wire_bytes.load(Ordering::Relaxed)
        })
    };
    let mut callers = Vec::new();
    for _ in 0..load.connections.max(1) {
        let connection = client(config)?;
        let raw = match load.protocol {
            Protocol::Grpc => None,
            _ => Some(
                wire::Connection::open(&config.addr, config.token.clone(), Arc::clone(&wire_bytes))
                    .await?,
            ),
        };
        for caller in 0..load.concurrency.max(1) {
            let (client, raw, ids, counter, measured, load) = (
                connection.clone(),
                raw.clone(),
                Arc::clone(&ids),
                Arc::clone(&counter),
                Arc::clone(&measured),
                load.clone(),
            );
            callers.push(tokio::spawn(async move {
                let mut tally = Tally::default();
                let mut i = caller;
                loop {
                    let started = Instant::now();
                    let counts = started >= measure_from;
                    let done = match load.count {
                        Some(count) => counts && measured.fetch_add(1, Ordering::Relaxed) >= count,
                        None => started >= stop,
                    };
                    if done {
                        break;
                    }
                    let outcome = match &raw {
                        Some(raw) => raw
                            .get_user(load.protocol, &ids[i % ids.len()])
                            .await
                            .map(|()| 1),
                        None => one_call(&client, &load, &ids, i, run_id, &counter).await,
                    };
                    if counts {
                        tally.record(started, outcome);
                    }
                    i = i.wrapping_add(7919);
                }
                tally
            }));
        }
    }
    let mut total = Tally::default();
    for caller in callers {
        total.merge(caller.await.map_err(|e| e.to_string())?);
    }
    let seconds = match load.count {
        Some(_) => measure_from.elapsed().as_secs_f64(),
        None => load.duration.as_secs_f64(),
    };
    let calls = total.latencies_us.len() as u64;
    let bytes = wire_bytes.load(Ordering::Relaxed) - bytes_at_start.await.unwrap_or(0);
    Ok(Report {
        scenario: load.scenario,
        protocol: load.protocol,
        bytes_per_call: (load.protocol != Protocol::Grpc && calls > 0)
            .then(|| bytes as f64 / calls as f64),
        calls,
        seconds,
        calls_per_second: calls as f64 / seconds,
        items_per_second: total.items as f64 / seconds,
        latency_us: Percentiles::of(total.latencies_us),
        errors: total.errors,
    })
}

/// One call of the scenario; OK carries the items it moved.
async fn one_call(
    client: &Client,
    load: &Load,
    ids: &[String],
    i: usize,
    run: u64,
    counter: &AtomicU64,
) -> Result<u64, Status> {
    match load.scenario {
        Scenario::Get => client.get_user(&ids[i % ids.len()]).await.map(|_| 1),
        Scenario::Create => {
            let n = counter.fetch_add(1, Ordering::Relaxed);
            client.create_user(new_user(run, n), None).await.map(|_| 1)
        }
        Scenario::List => {
            let mut stream = client.list_users(pb::ListUsersRequest::default()).await?;
            let mut received = 0;
            while stream.message().await?.is_some() {
                received += 1;
            }
            Ok(received)
        }
        Scenario::Bulk => {
            let first = counter.fetch_add(load.batch as u64, Ordering::Relaxed);
            let batch: Vec<_> = (first..first + load.batch as u64)
                .map(|n| new_user(run, n))
                .collect();
            let response = client.bulk_create_users(tokio_stream::iter(batch)).await?;
            Ok(response.total_count as u64)
        }
        Scenario::Watch => unreachable!("watch runs on its own"),
    }
}

/// Opens `count` watch streams, each subscribed to a fresh UUID no user has,
/// a hundred to a connection (under the server's 200 streams each), and
/// returns them open.
async fn idle_watchers(
    config: &ClientConfig,
    count: usize,
) -> Result<Vec<tonic::Streaming<pb::UserEvent>>, String> {
    let mut streams = Vec::with_capacity(count);
    let mut connection = None;
    for w in 0..count {
        if w % 100 == 0 {
            connection = Some(client(config)?);
        }
        let subscriptions = tokio_stream::iter(vec![pb::EventStreamRequest {
            user_id: uuid::Uuid::now_v7().to_string(),
            resume_after: 0,
        }])
        .chain(tokio_stream::pending());
        let mut events = connection
            .as_ref()
            .expect("made on the first")
            .watch_user_events(subscriptions)
            .await
            .map_err(|s| format!("idle watch: {}", s.message()))?;
        events
            .message()
            .await
            .map_err(|s| format!("idle watch: {}", s.message()))?;
        streams.push(events);
    }
    Ok(streams)
}

/// The watch scenario: `watchers` streams subscribed to everything, spread
/// over the connections, and a writer creating users at `write_rate`. Each write's start is noted by
/// user name; each delivery's latency is measured against it.
async fn watch(
    config: &ClientConfig,
    load: &Load,
    writer: &Client,
    run: u64,
) -> Result<Report, String> {
    // When each write started, by its number, as nanoseconds after
    // `origin` (0: not sent). A watcher finds a delivery's write from the
    // user's name, without a lock or a hash: at a million deliveries a
    // second, the shared map this replaced kept the load generator's CPU
    // at its limit, below what the server sent.
    let origin = Instant::now();
    let capacity = (f64::from(load.write_rate.max(1))
        * (load.warmup + load.duration + Duration::from_secs(2)).as_secs_f64())
        as usize
        + 1;
    let sent: Arc<Vec<AtomicU64>> = Arc::new((0..capacity).map(|_| AtomicU64::new(0)).collect());
    let (stop_watchers, stopped) = tokio::sync::watch::channel(false);
    let mut watchers = Vec::new();
    let measure_from = Instant::now() + load.warmup;
    let measured_after = measure_from.duration_since(origin).as_nanos() as u64;
    // Watchers share the connections, as many streams multiplex on one.
    let connections = (0..load.connections.max(1))
        .map(|_| client(config))
        .collect::<Result<Vec<_>, _>>()?;
    for w in 0..load.watchers.max(1) {
        let connection = &connections[w % connections.len()];
        let subscriptions = tokio_stream::iter(vec![pb::EventStreamRequest {
            user_id: "*".into(),
            resume_after: 0,
        }])
        .chain(tokio_stream::pending());
        let mut events = connection
            .watch_user_events(subscriptions)
            .await
            .map_err(|s| format!("watch: {}", s.message()))?;
        events
            .message()
            .await
            .map_err(|s| format!("watch: {}", s.message()))?;
        let sent = Arc::clone(&sent);
        let mut stopped = stopped.clone();
        watchers.push(tokio::spawn(async move {
            let mut tally = Tally::default();
            loop {
                let event = tokio::select! {
                    event = events.message() => match event {
                        Ok(Some(event)) => event,
                        _ => break,
                    },
                    _ = stopped.changed() => break,
                };
                if event.event_type != "user_created" {
                    continue;
                }
                let Some(n) = write_number(&event.payload) else {
                    continue;
                };
                let started = sent
                    .get(n)
                    .map(|at| at.load(Ordering::Acquire))
                    .filter(|&at| at > measured_after);
                if let Some(started) = started {
                    tally.record(origin + Duration::from_nanos(started), Ok(1));
                }
            }
            tally
        }));
    }
    // Open loop: each write starts on its tick whether or not the last has
    // been answered, so a slow CreateUser cannot lower the rate offered.
    let interval = Duration::from_secs_f64(1.0 / f64::from(load.write_rate.max(1)));
    let mut ticker = tokio::time::interval(interval);
    let stop = measure_from + load.duration;
    let mut writes = 0u64;
    let mut answers = tokio::task::JoinSet::new();
    while Instant::now() < stop {
        ticker.tick().await;
        let request = new_user(run, writes);
        if let Some(at) = sent.get(writes as usize) {
            let since = origin.elapsed().as_nanos().max(1) as u64;
            at.store(since, Ordering::Release);
        }
        let writer = writer.clone();
        answers.spawn(async move { writer.create_user(request, None).await.err() });
        writes += 1;
    }
    let mut errors = BTreeMap::new();
    while let Some(answer) = answers.join_next().await {
        if let Some(status) = answer.map_err(|e| e.to_string())? {
            *errors
                .entry(crate::error::code_name(status.code()).to_owned())
                .or_default() += 1;
        }
    }
    tokio::time::sleep(Duration::from_millis(500)).await; // the last deliveries
    let _ = stop_watchers.send(true);
    let mut total = Tally::default();
    for watcher in watchers {
        total.merge(watcher.await.map_err(|e| e.to_string())?);
    }
    let seconds = load.duration.as_secs_f64();
    Ok(Report {
        scenario: Scenario::Watch,
        protocol: load.protocol,
        bytes_per_call: None,
        calls: writes,
        seconds,
        calls_per_second: writes as f64 / seconds,
        items_per_second: total.items as f64 / seconds,
        latency_us: Percentiles::of(total.latencies_us),
        errors,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_delivery_names_its_write() {
        let user = pb::User {
            id: "0190c0de-0000-7000-8000-000000000001".into(),
            name: "Bench user 4321".into(),
            email: "bench-1-4321@example.com".into(),
            role: 1,
            created_at: 1_700_000_000,
            bio: Some("b".into()),
            ..Default::default()
        };
        let payload = prost::Message::encode_to_vec(&user);
        assert_eq!(write_number(&payload), Some(4321));
        let other = pb::User {
            name: "Someone".into(),
            ..user
        };
        assert_eq!(write_number(&prost::Message::encode_to_vec(&other)), None);
    }

    #[test]
    fn percentiles_pick_the_right_samples() {
        let p = Percentiles::of((1..=100).collect());
        assert_eq!((p.p50, p.p90, p.p99, p.max), (51, 90, 99, 100));
        assert_eq!(Percentiles::of(Vec::new()).max, 0);
    }
}
