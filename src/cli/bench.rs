//! `usersvc bench SCENARIO`: the load generator, against any server that
//! speaks our .proto. Point it at a server started with `--rate-limit 0`,
//! or the per-caller limit is what it measures.

use std::time::Duration;

use clap::Args;

use super::output::Output;
use super::{ConnectArgs, Failure};
use crate::loadgen::{self, Load, Protocol, Report, Scenario};

#[derive(Debug, Args)]
pub struct BenchArgs {
    #[arg(value_enum)]
    scenario: Scenario,
    /// HTTP/2 connections.
    #[arg(long, default_value_t = 4)]
    connections: usize,
    /// Callers per connection, each waiting for its answer before its next call.
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// How long to measure, as 10s.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Calls to measure instead of a duration (not for watch, which runs
    /// for its duration at its write rate).
    #[arg(long, conflicts_with = "duration")]
    count: Option<u64>,
    /// How long to run first without counting.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    warmup: Duration,
    /// Users created first, for get and list.
    #[arg(long, default_value_t = 1000)]
    users: usize,
    /// Users per BulkCreateUsers call.
    #[arg(long, default_value_t = 1000)]
    batch: usize,
    /// Watch streams, for watch.
    #[arg(long, default_value_t = 100)]
    watchers: usize,
    /// Writes per second while watching.
    #[arg(long, default_value_t = 1000)]
    write_rate: u32,
    /// Watch streams held open through the run, each subscribed to a user
    /// no write touches, a hundred to a connection.
    #[arg(long, default_value_t = 0)]
    idle_watchers: usize,
    /// The protocol GetUser is called over (get only): grpc through the
    /// usersvc client, or grpc-raw, grpc-web, connect-proto or connect-json
    /// from one plain HTTP/2 client, which also counts the bytes per call.
    #[arg(long, value_enum, default_value_t = Protocol::Grpc)]
    protocol: Protocol,
    #[command(flatten)]
    connect: ConnectArgs,
}

fn print(report: &Report, output: Output) -> Result<(), Failure> {
    match output {
        Output::Json => println!(
            "{}",
            serde_json::to_string(report).map_err(|e| Failure::Other(e.to_string()))?
        ),
        Output::Table => {
            let l = &report.latency_us;
            println!("scenario      {:?}", report.scenario);
            println!("protocol      {:?}", report.protocol);
            println!("calls         {} in {:.1} s", report.calls, report.seconds);
            println!("calls/s       {:.0}", report.calls_per_second);
            println!("items/s       {:.0}", report.items_per_second);
            if let Some(bytes) = report.bytes_per_call {
                println!("bytes/call    {bytes:.0}");
            }
            println!(
                "latency (µs)  p50 {}  p90 {}  p99 {}  max {}",
                l.p50, l.p90, l.p99, l.max
            );
            for (code, count) in &report.errors {
                println!("errors        {code}: {count}");
            }
        }
    }
    Ok(())
}

pub async fn run(args: BenchArgs) -> Result<(), Failure> {
    if args.count.is_some() && args.scenario == Scenario::Watch {
        return Err(Failure::Usage(
            "--count is for get, create, list and bulk; watch runs for --duration".into(),
        ));
    }
    let config = args.connect.config(None);
    let load = Load {
        scenario: args.scenario,
        connections: args.connections,
        concurrency: args.concurrency,
        duration: args.duration,
        count: args.count,
        warmup: args.warmup,
        seed_users: args.users,
        batch: args.batch,
        watchers: args.watchers,
        write_rate: args.write_rate,
        idle_watchers: args.idle_watchers,
        protocol: args.protocol,
    };
    let report = loadgen::run(&config, &load).await.map_err(Failure::Other)?;
    print(&report, args.connect.output)
}
