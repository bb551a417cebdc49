//! Where log lines go: the global `tracing` subscriber, and the thread that
//! writes its lines.

/// Installs the global `tracing` subscriber: format and level from
/// `RUST_LOG` (default `info`), JSON lines when `json` is set.
///
/// Lines are formatted on the calling thread but written by a thread of
/// their own, which drains every line queued and writes them with one
/// syscall: a write per call was the largest cost of serving GetUser
/// (see BENCHMARKS.md). The queue blocks rather than drops when full, since
/// the audit lines must not be lost; it holds 8,192 lines, since the
/// default 128,000 took 3 MiB of idle RSS. Keep the returned guard until
/// exit: its drop writes what is still queued.
pub fn init(json: bool) -> tracing_appender::non_blocking::WorkerGuard {
    use tracing_subscriber::EnvFilter;
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let (writer, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .lossy(false)
        .buffered_lines_limit(8192)
        .thread_name("usersvc-log")
        .finish(std::io::BufWriter::with_capacity(
            64 * 1024,
            std::io::stderr(),
        ));
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(writer);
    let _ = if json {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
    guard
}
