//! The `usersvc` command: `serve`, `token`, and one client command per RPC.
//!
//! Each subcommand lives in its own file below `cli/` and calls the library;
//! none holds behaviour a test could not reach through the library itself.
//! Client errors print the gRPC code and message on one line and exit 1;
//! invalid arguments exit 2 before anything is bound or sent.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::auth::{Expect, Secret, secret::Source};
use crate::client::{Client, ClientConfig};
use crate::domain::Role;

mod bench;
mod bulk_create;
mod output;
mod serve;
mod soak;
mod token;
mod users;
mod watch;

pub use output::Output;

#[derive(Debug, Parser)]
#[command(
    name = "usersvc",
    version,
    about = "A gRPC user directory, and a client for it"
)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the server.
    Serve(Box<serve::ServeArgs>),
    /// Print a signed token for the server's secret.
    Token(token::TokenArgs),
    /// Fetch one user.
    Get(users::GetArgs),
    /// Create one user.
    Create(users::CreateArgs),
    /// Change fields of one user.
    Update(users::UpdateArgs),
    /// Delete one user.
    Delete(users::DeleteArgs),
    /// List users in creation order, or as --order-by says.
    List(users::ListArgs),
    /// Search users with a filter, a page at a time, with the total.
    Search(users::SearchArgs),
    /// Create every user in a file (JSON lines or CSV), or none.
    BulkCreate(bulk_create::BulkCreateArgs),
    /// Print changes to users as they happen, until Ctrl-C.
    Watch(watch::WatchArgs),
    /// Load-test a server: throughput, latency percentiles, errors by code.
    Bench(bench::BenchArgs),
    /// Soak two replicas on PostgreSQL with resumable watches, through a
    /// database restart and a replica killed; fails on any missed change.
    Soak(soak::SoakArgs),
}

/// Where and how client commands reach the server.
#[derive(Debug, Args)]
struct ConnectArgs {
    /// Server address.
    #[arg(long, env = "USERSVC_ADDR", default_value = "http://127.0.0.1:50051")]
    addr: String,
    /// Bearer token (see `usersvc token`).
    #[arg(long, env = "USERSVC_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Deadline for each call, as 500ms, 10s or 1m. `watch` has none unless given.
    #[arg(long, env = "USERSVC_TIMEOUT", value_parser = humantime::parse_duration)]
    timeout: Option<Duration>,
    /// How to print results.
    #[arg(long, env = "USERSVC_OUTPUT", value_enum, default_value_t = Output::Table)]
    output: Output,
    /// For an https:// address: the CA certificate (PEM) to trust.
    #[arg(long, env = "USERSVC_CA")]
    ca: Option<std::path::PathBuf>,
    /// Client certificate (PEM), for servers that require mTLS.
    #[arg(long, env = "USERSVC_CERT", requires = "key")]
    cert: Option<std::path::PathBuf>,
    /// Client key (PEM), with --cert.
    #[arg(long, env = "USERSVC_KEY", requires = "cert")]
    key: Option<std::path::PathBuf>,
}

/// Where the signing secret comes from; shared by `serve` and `token`.
#[derive(Debug, Args)]
struct SecretArgs {
    /// File holding the JWT secret (HS256, at least 32 bytes).
    #[arg(long, env = "USERSVC_JWT_SECRET_FILE")]
    jwt_secret_file: Option<PathBuf>,
    /// The JWT secret itself; only from the environment, never a flag, so it
    /// stays out of `ps` and shell history.
    #[arg(skip = std::env::var("USERSVC_JWT_SECRET").ok())]
    jwt_secret: Option<String>,
    /// Directory for the generated secret when neither of the above is set,
    /// and for the default store.
    #[arg(long, env = "USERSVC_DATA_DIR", default_value_os_t = default_data_dir())]
    data_dir: PathBuf,
    /// Issuer that tokens carry and the server requires (`iss`).
    #[arg(long, env = "USERSVC_JWT_ISSUER")]
    jwt_issuer: Option<String>,
    /// Audience that tokens carry and the server requires (`aud`).
    #[arg(long, env = "USERSVC_JWT_AUDIENCE")]
    jwt_audience: Option<String>,
}

impl SecretArgs {
    fn resolve(&self) -> Result<(Secret, Source), Failure> {
        Secret::resolve(
            self.jwt_secret_file.as_deref(),
            self.jwt_secret.as_deref(),
            &self.data_dir,
        )
        .map_err(|e| Failure::Usage(format!("cannot load the JWT secret: {e}")))
    }

    fn expect(&self) -> Expect {
        Expect {
            issuer: self.jwt_issuer.clone(),
            audience: self.jwt_audience.clone(),
        }
    }
}

fn parse_role(value: &str) -> Result<Role, String> {
    Role::from_name(value)
        .ok_or_else(|| format!("unknown role {value:?}: expected admin, editor or viewer"))
}

/// The data directory's default, relative to where the server runs.
fn default_data_dir() -> PathBuf {
    PathBuf::from("data")
}

/// Deadline of a client call when `--timeout` is not given.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

impl ConnectArgs {
    /// A client with `timeout` unless `--timeout` says otherwise.
    fn client(&self, timeout: Option<Duration>) -> Result<Client, Failure> {
        Client::new(self.config(timeout)).map_err(|e| Failure::Usage(e.to_string()))
    }

    /// How to connect, with `timeout` unless `--timeout` says otherwise.
    fn config(&self, timeout: Option<Duration>) -> ClientConfig {
        let mut config = ClientConfig::new(self.addr.clone());
        config.token = self.token.clone();
        config.timeout = self.timeout.or(timeout);
        config.tls = crate::client::ClientTls {
            ca: self.ca.clone(),
            cert: self.cert.clone(),
            key: self.key.clone(),
        };
        config
    }
}

/// Why a command failed, and so how it exits.
#[derive(Debug)]
enum Failure {
    /// Bad arguments or input: exit 2.
    Usage(String),
    /// The server said no, or could not be reached: exit 1.
    Rpc(tonic::Status),
    /// Anything else: exit 1.
    Other(String),
}

impl From<tonic::Status> for Failure {
    fn from(status: tonic::Status) -> Self {
        Failure::Rpc(status)
    }
}

/// The trace `TRACEPARENT` and `TRACESTATE` name, if they are set.
fn trace_from_environment() -> Option<opentelemetry::Context> {
    let mut headers = http::HeaderMap::new();
    for (variable, header) in [("TRACEPARENT", "traceparent"), ("TRACESTATE", "tracestate")] {
        if let Some(value) = std::env::var(variable)
            .ok()
            .and_then(|value| http::HeaderValue::try_from(value).ok())
        {
            headers.insert(header, value);
        }
    }
    headers
        .contains_key("traceparent")
        .then(|| crate::server::traces::parent(&headers))
}

/// Parses the command line, runs the command and says how to exit.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    // The load generator is pinned to one CPU as the server is, and gains
    // from the same layout there.
    let layout = match &cli.command {
        Command::Serve(args) => args.runtime,
        Command::Bench(_) => serve::RuntimeLayout::Auto,
        _ => serve::RuntimeLayout::MultiThread,
    };
    let runtime = match layout.build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    // A script that runs inside a trace passes it on as `TRACEPARENT` (and
    // `TRACESTATE`), as OpenTelemetry's environment carriers do: the calls
    // this command makes then carry it to the server.
    // Not for `serve`, `bench` or `soak`: there it would become every
    // call's parent.
    let client_command = !matches!(
        cli.command,
        Command::Serve(_) | Command::Bench(_) | Command::Soak(_)
    );
    let _trace = trace_from_environment()
        .filter(|_| client_command)
        .map(opentelemetry::Context::attach);
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Usage(message)) => {
            eprintln!("error: {message}");
            ExitCode::from(2)
        }
        Err(Failure::Rpc(status)) => {
            eprintln!(
                "error: {}: {}",
                crate::error::code_name(status.code()),
                status.message()
            );
            ExitCode::FAILURE
        }
        Err(Failure::Other(message)) => {
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> Result<(), Failure> {
    match cli.command {
        Command::Serve(args) => serve::run(*args).await,
        Command::Token(args) => token::run(args),
        Command::Get(args) => users::get(args).await,
        Command::Create(args) => users::create(args).await,
        Command::Update(args) => users::update(args).await,
        Command::Delete(args) => users::delete(args).await,
        Command::List(args) => users::list(args).await,
        Command::Search(args) => users::search(args).await,
        Command::BulkCreate(args) => bulk_create::run(args).await,
        Command::Watch(args) => watch::run(args).await,
        Command::Bench(args) => bench::run(args).await,
        Command::Soak(args) => soak::run(args).await,
    }
}
