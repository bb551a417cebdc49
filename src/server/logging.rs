//! Where log lines go: the global `tracing` subscriber, and the thread that
//! writes its lines.
//!
//! Lines are formatted on the calling thread and appended to one buffer; a
//! thread of its own takes the whole buffer and writes it with one syscall.
//! That thread is not woken per line: it wakes on a short timer, or early
//! when the buffer passes a high-water mark. A wake per line cost a context
//! switch per call, half of GetUser's throughput on one CPU (BENCHMARKS.md).
//! When the sink is slower than the calls (a stalled pipe, a slow disk), the
//! buffer fills. Then the two kinds of line part ways:
//! - an access line (target `usersvc::rpc`, one per call) is dropped and
//!   counted, so that a slow sink never stalls the runtime that serves the
//!   calls; the count is exported as `usersvc_log_lines_dropped_total`,
//!   and a warning says so at most every ten seconds;
//! - any other line, audit lines above all, waits for room (counted in
//!   `usersvc_log_lines_waiting` while it does): a change that was made is
//!   never missing from the audit trail.

use std::cell::RefCell;
use std::io::Write;
use std::net::SocketAddr;
use std::sync::{Arc, Condvar, LazyLock, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant, SystemTime};

use prometheus::{IntCounter, IntGauge};
use tracing::Metadata;
use tracing_subscriber::fmt::MakeWriter;

/// The access log's target: the lines that may be dropped.
pub const ACCESS_TARGET: &str = "usersvc::rpc";

/// Bytes buffered at most: about 8,192 access lines of 300 bytes.
const BUFFER_BYTES: usize = 2_500_000;

/// Past this many bytes the writer is woken before its timer: a burst is
/// written in 64 KiB syscalls, not held for a tick.
const WAKE_AT: usize = 64 * 1024;

/// How long a line may wait in the buffer when few are logged.
const TICK: Duration = Duration::from_millis(20);

/// The least time between two warnings about dropped lines: a stalled sink
/// would otherwise fill with warnings the room that calls' lines need.
const WARN_EVERY: Duration = Duration::from_secs(10);

/// How long exit waits for the queue to be written. A sink that is stuck
/// for good must not keep the process from exiting.
const DRAIN_AT_EXIT: Duration = Duration::from_secs(5);

/// Access lines dropped since the process started. One counter for the
/// process, since there is one log; each server's registry exports it.
pub static DROPPED_LINES: LazyLock<IntCounter> = LazyLock::new(|| {
    IntCounter::new(
        "usersvc_log_lines_dropped_total",
        "Access log lines dropped because the log sink was slower than the calls.",
    )
    .expect("valid metric")
});

/// Lines waiting for room in a full buffer: audit lines held while the
/// sink is stalled.
pub static WAITING_LINES: LazyLock<IntGauge> = LazyLock::new(|| {
    IntGauge::new(
        "usersvc_log_lines_waiting",
        "Log lines (audit lines among them) waiting for room because the log sink is stalled.",
    )
    .expect("valid metric")
});

/// What the subscriber's writers and the writer thread share.
#[derive(Default)]
struct Shared {
    state: Mutex<State>,
    /// The writer thread waits here for a full tick or a high-water mark.
    work: Condvar,
    /// Lines that may not be dropped wait here for room.
    room: Condvar,
}

#[derive(Default)]
struct State {
    buffer: Vec<u8>,
    /// The writer thread is waiting on `work`, and a push past the
    /// high-water mark should wake it.
    idle: bool,
    stop: bool,
    /// The writer thread has written its last bytes.
    finished: bool,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Appends one line; a droppable one is dropped, and any other waits,
    /// when the buffer is full.
    fn push(&self, line: &[u8], droppable: bool) {
        let mut state = self.lock();
        if state.buffer.len() + line.len() > BUFFER_BYTES && !state.buffer.is_empty() {
            if droppable {
                DROPPED_LINES.inc();
                return;
            }
            WAITING_LINES.inc();
            while state.buffer.len() + line.len() > BUFFER_BYTES
                && !state.buffer.is_empty()
                && !state.finished
            {
                state = self.room.wait(state).unwrap_or_else(|p| p.into_inner());
            }
            WAITING_LINES.dec();
        }
        state.buffer.extend_from_slice(line);
        if state.idle && state.buffer.len() >= WAKE_AT {
            state.idle = false;
            self.work.notify_one();
        }
    }
}

/// The subscriber's writer: routes each line by its target.
struct Queue(Arc<Shared>);

/// Writes one formatted line to the buffer. The fmt layer formats a whole
/// event before it writes, with one `write_all`, so one `write` is a line.
struct Line<'a> {
    shared: &'a Shared,
    droppable: bool,
}

impl<'a> MakeWriter<'a> for Queue {
    type Writer = Line<'a>;

    fn make_writer(&'a self) -> Line<'a> {
        Line {
            shared: &self.0,
            droppable: false,
        }
    }

    fn make_writer_for(&'a self, meta: &Metadata<'_>) -> Line<'a> {
        Line {
            shared: &self.0,
            droppable: meta.target() == ACCESS_TARGET,
        }
    }
}

impl Write for Line<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.shared.push(buf, self.droppable);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Keep it until exit: its drop writes what is still buffered.
pub struct LogGuard {
    shared: Arc<Shared>,
}

impl Drop for LogGuard {
    fn drop(&mut self) {
        let deadline = Instant::now() + DRAIN_AT_EXIT;
        let mut state = self.shared.lock();
        state.stop = true;
        self.shared.work.notify_one();
        while !state.finished {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return;
            }
            state = self
                .shared
                .room
                .wait_timeout(state, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }
}

/// The buffer and format of the installed log, for the access lines that
/// are written without `tracing`'s formatter.
struct Sink {
    shared: Arc<Shared>,
    json: bool,
}

static SINK: OnceLock<Sink> = OnceLock::new();

thread_local! {
    /// Each thread's access line, formatted here and copied to the buffer.
    static LINE: RefCell<Vec<u8>> = RefCell::new(Vec::with_capacity(512));
}

/// One call's access line. It is the log's most frequent line by far, so
/// it is formatted here, straight into a reused buffer, to the very text
/// (or JSON) `tracing`'s formatter would write for it: that formatter's
/// field visitors, styles and allocations had cost a call about a tenth of
/// its time. Written only when the filter lets `usersvc::rpc` at INFO
/// through; before the log is installed (a test's server) it goes through
/// `tracing` as any line does.
pub struct AccessLine<'a> {
    pub method: &'a str,
    pub protocol: &'static str,
    pub peer: Option<SocketAddr>,
    pub code: &'static str,
    pub duration_us: u64,
    pub messages_in: u64,
    pub messages_out: u64,
    pub request_id: Option<&'a str>,
    /// The call's trace, when traces are on: to find its spans.
    pub trace_id: Option<&'a str>,
}

impl AccessLine<'_> {
    pub fn log(&self) {
        if !tracing::enabled!(target: ACCESS_TARGET, tracing::Level::INFO) {
            return;
        }
        let Some(sink) = SINK.get() else {
            tracing::info!(
                target: ACCESS_TARGET,
                method = self.method,
                protocol = self.protocol,
                peer = self.peer.map(tracing::field::display),
                code = self.code,
                duration_us = self.duration_us,
                messages_in = self.messages_in,
                messages_out = self.messages_out,
                request_id = self.request_id,
                trace_id = self.trace_id,
                "rpc finished",
            );
            return;
        };
        LINE.with_borrow_mut(|line| {
            line.clear();
            if sink.json {
                self.json(line);
            } else {
                self.text(line);
            }
            sink.shared.push(line, true);
        });
    }

    /// `tracing-subscriber`'s default format, without colours.
    fn text(&self, out: &mut Vec<u8>) {
        let now = humantime::format_rfc3339_micros(SystemTime::now());
        let _ = write!(out, "{now}  INFO {ACCESS_TARGET}: rpc finished method=");
        quoted(out, self.method);
        out.extend_from_slice(b" protocol=");
        quoted(out, self.protocol);
        if let Some(peer) = self.peer {
            let _ = write!(out, " peer={peer}");
        }
        out.extend_from_slice(b" code=");
        quoted(out, self.code);
        let _ = write!(
            out,
            " duration_us={} messages_in={} messages_out={}",
            self.duration_us, self.messages_in, self.messages_out
        );
        if let Some(id) = self.request_id {
            out.extend_from_slice(b" request_id=");
            quoted(out, id);
        }
        if let Some(id) = self.trace_id {
            let _ = write!(out, " trace_id=\"{id}\"");
        }
        out.push(b'\n');
    }

    /// `tracing-subscriber`'s JSON format: the same keys, in its order.
    fn json(&self, out: &mut Vec<u8>) {
        let now = humantime::format_rfc3339_micros(SystemTime::now());
        let _ = write!(
            out,
            "{{\"timestamp\":\"{now}\",\"level\":\"INFO\",\"fields\":{{\"message\":\"rpc finished\",\"method\":"
        );
        let _ = serde_json::to_writer(&mut *out, self.method);
        let _ = write!(out, ",\"protocol\":\"{}\"", self.protocol);
        if let Some(peer) = self.peer {
            let _ = write!(out, ",\"peer\":\"{peer}\"");
        }
        let _ = write!(
            out,
            ",\"code\":\"{}\",\"duration_us\":{},\"messages_in\":{},\"messages_out\":{}",
            self.code, self.duration_us, self.messages_in, self.messages_out
        );
        if let Some(id) = self.request_id {
            out.extend_from_slice(b",\"request_id\":");
            let _ = serde_json::to_writer(&mut *out, id);
        }
        if let Some(id) = self.trace_id {
            let _ = write!(out, ",\"trace_id\":\"{id}\"");
        }
        let _ = writeln!(out, "}},\"target\":\"{ACCESS_TARGET}\"}}");
    }
}

/// `text` as `{:?}` writes a string: in quotes, escaped where it must be.
fn quoted(out: &mut Vec<u8>, text: &str) {
    let plain = text
        .bytes()
        .all(|b| (b' '..=b'~').contains(&b) && b != b'"' && b != b'\\');
    if plain {
        out.push(b'"');
        out.extend_from_slice(text.as_bytes());
        out.push(b'"');
    } else {
        let _ = write!(out, "{text:?}");
    }
}

/// Installs the global `tracing` subscriber: format and level from
/// `RUST_LOG` (default `info`), JSON lines when `json` is set.
pub fn init(json: bool) -> LogGuard {
    use tracing_subscriber::EnvFilter;
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let shared = Arc::new(Shared::default());
    let writer = Arc::clone(&shared);
    std::thread::Builder::new()
        .name("usersvc-log".into())
        .spawn(move || write_lines(&writer, std::io::stderr()))
        .expect("spawn the log writer");
    std::thread::Builder::new()
        .name("usersvc-log-drops".into())
        .spawn(warn_of_drops)
        .expect("spawn the log drop warner");
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(Queue(Arc::clone(&shared)));
    let installed = if json {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
    if installed.is_ok() {
        let _ = SINK.set(Sink {
            shared: Arc::clone(&shared),
            json,
        });
    }
    LogGuard { shared }
}

/// The writer thread: every tick, or sooner past the high-water mark,
/// takes the whole buffer and writes it in one syscall, until told to stop.
fn write_lines(shared: &Shared, mut sink: impl Write) {
    let mut spare = Vec::with_capacity(WAKE_AT);
    loop {
        let mut state = shared.lock();
        if state.buffer.len() < WAKE_AT && !state.stop {
            state.idle = true;
            state = shared
                .work
                .wait_timeout(state, TICK)
                .unwrap_or_else(|p| p.into_inner())
                .0;
            state.idle = false;
        }
        let stop = state.stop;
        std::mem::swap(&mut state.buffer, &mut spare);
        drop(state);
        // Room for the lines that wait for it.
        shared.room.notify_all();
        if !spare.is_empty() {
            let _ = sink.write_all(&spare);
            let _ = sink.flush();
            spare.clear();
        }
        if stop {
            let mut state = shared.lock();
            if state.buffer.is_empty() {
                state.finished = true;
                drop(state);
                shared.room.notify_all();
                return;
            }
        }
    }
}

/// Says that access lines were dropped, soon after the first drop and then
/// at most every `WARN_EVERY`. The warning is not an access line, so it
/// waits for room rather than being dropped itself.
fn warn_of_drops() {
    let mut reported = 0;
    loop {
        std::thread::sleep(Duration::from_secs(1));
        let dropped = DROPPED_LINES.get();
        if dropped > reported {
            tracing::warn!(
                target: "usersvc::log",
                dropped = dropped - reported,
                total = dropped,
                "access log lines dropped: the log sink is slower than the calls",
            );
            reported = dropped;
            std::thread::sleep(WARN_EVERY);
        }
    }
}
