//! Where log lines go: the global `tracing` subscriber, and the thread that
//! writes its lines.
//!
//! Lines are formatted on the calling thread but written by a thread of
//! their own, which drains every line queued and writes them with one
//! syscall: a write per call was the largest cost of serving GetUser (see
//! BENCHMARKS.md). When the sink is slower than the calls (a stalled pipe,
//! a slow disk), the queue fills. Then the two kinds of line part ways:
//! - an access line (target `usersvc::rpc`, one per call) is dropped and
//!   counted, so that a slow sink never stalls the runtime that serves the
//!   calls; the count is exported as `usersvc_log_lines_dropped_total`,
//!   and a warning says so at most every ten seconds;
//! - any other line, audit lines above all, waits for room: a change that
//!   was made is never missing from the audit trail.

use std::io::Write;
use std::sync::LazyLock;
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::time::{Duration, Instant};

use prometheus::IntCounter;
use tracing::Metadata;
use tracing_subscriber::fmt::MakeWriter;

/// The access log's target: the lines that may be dropped.
pub const ACCESS_TARGET: &str = "usersvc::rpc";

/// Lines queued at most. 8,192 lines of about 300 bytes is 2.4 MiB at
/// worst; a queue of 128,000 (tracing-appender's default) took 3 MiB of idle RSS.
const QUEUE_LINES: usize = 8192;

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

enum Entry {
    Line(Vec<u8>),
    Stop,
}

/// The subscriber's writer: routes each line by its target.
struct Queue(SyncSender<Entry>);

/// Writes one formatted line to the queue. The fmt layer formats a whole
/// event before it writes, with one `write_all`, so one `write` is a line.
struct Line<'a> {
    queue: &'a SyncSender<Entry>,
    droppable: bool,
}

impl<'a> MakeWriter<'a> for Queue {
    type Writer = Line<'a>;

    fn make_writer(&'a self) -> Line<'a> {
        Line {
            queue: &self.0,
            droppable: false,
        }
    }

    fn make_writer_for(&'a self, meta: &Metadata<'_>) -> Line<'a> {
        Line {
            queue: &self.0,
            droppable: meta.target() == ACCESS_TARGET,
        }
    }
}

impl Write for Line<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let line = Entry::Line(buf.to_vec());
        if self.droppable {
            if let Err(TrySendError::Full(_)) = self.queue.try_send(line) {
                DROPPED_LINES.inc();
            }
        } else {
            // Err only once the writer has stopped, at exit.
            let _ = self.queue.send(line);
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Keep it until exit: its drop writes what is still queued.
pub struct LogGuard {
    queue: SyncSender<Entry>,
    written: Receiver<()>,
}

impl Drop for LogGuard {
    fn drop(&mut self) {
        let deadline = Instant::now() + DRAIN_AT_EXIT;
        let mut stop = Entry::Stop;
        loop {
            match self.queue.try_send(stop) {
                Ok(()) => break,
                Err(TrySendError::Full(entry)) if Instant::now() < deadline => {
                    stop = entry;
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err(_) => return,
            }
        }
        let left = deadline.saturating_duration_since(Instant::now());
        let _ = self.written.recv_timeout(left);
    }
}

/// Installs the global `tracing` subscriber: format and level from
/// `RUST_LOG` (default `info`), JSON lines when `json` is set.
pub fn init(json: bool) -> LogGuard {
    use tracing_subscriber::EnvFilter;
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let (queue, lines) = mpsc::sync_channel(QUEUE_LINES);
    let (done, written) = mpsc::channel();
    let sink = std::io::BufWriter::with_capacity(64 * 1024, std::io::stderr());
    std::thread::Builder::new()
        .name("usersvc-log".into())
        .spawn(move || {
            write_lines(lines, sink);
            let _ = done.send(());
        })
        .expect("spawn the log writer");
    std::thread::Builder::new()
        .name("usersvc-log-drops".into())
        .spawn(warn_of_drops)
        .expect("spawn the log drop warner");
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(Queue(queue.clone()));
    let _ = if json {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
    LogGuard { queue, written }
}

/// The writer thread: writes what is queued, a batch per syscall, until
/// told to stop.
fn write_lines(lines: Receiver<Entry>, mut sink: impl Write) {
    while let Ok(first) = lines.recv() {
        // A batch is bounded, so that a steady stream of lines is still
        // flushed now and then.
        for entry in std::iter::once(first).chain(lines.try_iter().take(QUEUE_LINES)) {
            match entry {
                Entry::Line(line) => {
                    let _ = sink.write_all(&line);
                }
                Entry::Stop => {
                    let _ = sink.flush();
                    return;
                }
            }
        }
        let _ = sink.flush();
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
