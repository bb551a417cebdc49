//! `usersvc soak`: resumable watches at scale, through a PostgreSQL restart
//! and a replica killed with SIGKILL (see `loadgen::soak`). Exits non-zero
//! on any change missed, repeated or reordered, or any acknowledged write
//! missing from the history.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use super::Failure;
use super::output::Output;
use crate::loadgen::soak::{Soak, SoakReport};

#[derive(Debug, Args)]
pub struct SoakArgs {
    /// The PostgreSQL database to run in (a schema of its own, dropped after).
    #[arg(
        long,
        env = "USERSVC_SOAK_PG",
        default_value = "postgres://root@127.0.0.1:5432/test"
    )]
    postgres: String,
    /// Watch streams, spread over both replicas.
    #[arg(long, default_value_t = 300)]
    watchers: usize,
    /// Of them, those that follow every user; by default one in a hundred.
    #[arg(long)]
    star_watchers: Option<usize>,
    /// Users each other watcher follows.
    #[arg(long, default_value_t = 10)]
    users_per_watcher: usize,
    /// Users created first, for watchers to follow and writes to update.
    #[arg(long, default_value_t = 1000)]
    seed_users: usize,
    /// Creates, updates and deletes per second.
    #[arg(long, default_value_t = 200)]
    rate: u32,
    /// How long to write, as 30s or 10m.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// When RSS is first taken as the baseline.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    warmup: Duration,
    /// The shell command that restarts PostgreSQL, run at a third of the run.
    #[arg(long, env = "USERSVC_SOAK_PG_RESTART")]
    pg_restart: String,
    /// Where the replicas' logs and the report go.
    #[arg(long, default_value = "target/soak")]
    log_dir: PathBuf,
    /// The usersvc binary the replicas run; this one by default.
    #[arg(long)]
    binary: Option<PathBuf>,
    #[arg(long, value_enum, default_value_t = Output::Table)]
    output: Output,
}

pub async fn run(args: SoakArgs) -> Result<(), Failure> {
    let binary = match args.binary {
        Some(binary) => binary,
        None => std::env::current_exe().map_err(|e| Failure::Other(e.to_string()))?,
    };
    let soak = Soak {
        binary,
        postgres: args.postgres,
        star_watchers: args.star_watchers.unwrap_or(args.watchers.div_ceil(100)),
        watchers: args.watchers,
        users_per_watcher: args.users_per_watcher,
        seed_users: args.seed_users,
        rate: args.rate,
        duration: args.duration,
        warmup: args.warmup,
        pg_restart: args.pg_restart,
        log_dir: args.log_dir,
    };
    let report = soak.run().await.map_err(Failure::Other)?;
    let json = serde_json::to_string(&report).map_err(|e| Failure::Other(e.to_string()))?;
    std::fs::write(soak.log_dir.join("report.json"), &json)
        .map_err(|e| Failure::Other(e.to_string()))?;
    match args.output {
        Output::Json => println!("{json}"),
        Output::Table => print(&report),
    }
    if report.passed() {
        Ok(())
    } else {
        Err(Failure::Other(format!(
            "the soak failed: {} missed, {} unexpected, {} duplicated, {} reordered, {} watchers failed, {} acknowledged writes lost, {} reconnects",
            report.missed,
            report.unexpected,
            report.duplicated,
            report.reordered,
            report.watchers_failed,
            report.writes_lost,
            report.reconnects
        )))
    }
}

fn print(report: &SoakReport) {
    let failed: u64 = report.writes_failed.values().sum();
    println!(
        "writes acknowledged   {} ({failed} failed: {:?})",
        report.writes_acknowledged, report.writes_failed
    );
    println!("acknowledged per s    {:.0}", report.writes_per_second);
    println!("acknowledged but lost {}", report.writes_lost);
    println!("changes in history    {}", report.changes_in_history);
    println!(
        "watchers              {} ({} wrong, {} failed)",
        report.watchers, report.watchers_wrong, report.watchers_failed
    );
    println!("deliveries            {}", report.deliveries);
    println!("missed                {}", report.missed);
    println!("unexpected            {}", report.unexpected);
    println!("duplicated            {}", report.duplicated);
    println!("reordered             {}", report.reordered);
    println!("reconnects            {}", report.reconnects);
    println!("longest resume        {} ms", report.longest_resume_ms);
    println!("PostgreSQL restart    {} ms", report.pg_restart_ms);
    let [a, b] = report.rss_after_warmup_kib;
    let [ka, kb] = report.rss_before_kill_kib;
    println!("RSS after warm-up     {} / {} MiB", a / 1024, b / 1024);
    println!("RSS before the kill   {} / {} MiB", ka / 1024, kb / 1024);
    for wrong in &report.wrong {
        println!("wrong watcher         {wrong:?}");
    }
    if let Some((_, ea, eb)) = report.rss_kib.last() {
        println!(
            "RSS at the end        {} / {} MiB (the first restarted)",
            ea / 1024,
            eb / 1024
        );
    }
}
