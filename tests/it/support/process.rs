//! A real `usersvc serve` process on a free port, killed when dropped.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

pub const BIN: &str = env!("CARGO_BIN_EXE_usersvc");

pub struct ServerProcess {
    pub child: Child,
    pub url: String,
    /// Where it serves Prometheus metrics, when started with `--metrics-addr`.
    pub metrics: Option<std::net::SocketAddr>,
    /// Reads the log, and returns every line of it at its end.
    reader: Option<std::thread::JoinHandle<Vec<String>>>,
    /// Lets a stalled log reader go on; see `start_with_stalled_log`.
    stalled: Option<mpsc::Sender<()>>,
}

impl ServerProcess {
    /// Starts `usersvc serve` with `args`, its data in `data_dir` and the
    /// tests' JWT secret, and waits until it says where it listens.
    pub fn start(args: &[&str], data_dir: &Path) -> ServerProcess {
        let mut command = Command::new(BIN);
        command.env(
            "USERSVC_JWT_SECRET",
            std::str::from_utf8(super::SECRET).unwrap(),
        );
        Self::spawn(command, args, data_dir, false)
    }

    /// As `start`, but its log is not read after the address: the server
    /// writes into a pipe that fills, as into a stalled log sink, until
    /// `resume_log`.
    pub fn start_with_stalled_log(args: &[&str], data_dir: &Path) -> ServerProcess {
        let mut command = Command::new(BIN);
        command.env(
            "USERSVC_JWT_SECRET",
            std::str::from_utf8(super::SECRET).unwrap(),
        );
        Self::spawn(command, args, data_dir, true)
    }

    /// Reads a stalled log again, from where it stopped.
    pub fn resume_log(&mut self) {
        let stalled = self.stalled.take().expect("a stalled log, resumed once");
        stalled.send(()).unwrap();
    }

    /// As `start`, with these environment variables besides.
    pub fn start_with_env(env: &[(&str, &str)], args: &[&str], data_dir: &Path) -> ServerProcess {
        let mut command = Command::new(BIN);
        command.env(
            "USERSVC_JWT_SECRET",
            std::str::from_utf8(super::SECRET).unwrap(),
        );
        command.envs(env.iter().copied());
        Self::spawn(command, args, data_dir, false)
    }

    /// As `start`, but with no secret given, so that the server generates
    /// one in `data_dir`, as on a first `make run`.
    pub fn start_with_generated_secret(args: &[&str], data_dir: &Path) -> ServerProcess {
        let mut command = Command::new(BIN);
        command.env_remove("USERSVC_JWT_SECRET");
        Self::spawn(command, args, data_dir, false)
    }

    fn spawn(mut command: Command, args: &[&str], data_dir: &Path, stall: bool) -> ServerProcess {
        // An address in `args` (a server started again where another was)
        // stands; otherwise any free port.
        command.arg("serve");
        if !args.contains(&"--addr") {
            command.args(["--addr", "127.0.0.1:0"]);
        }
        let mut child = command
            .arg("--data-dir")
            .arg(data_dir)
            .args(args)
            .env("RUST_LOG", "info")
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // Read the log until the server says where it listens; keep draining
        // it afterwards so the server never blocks on a full pipe.
        let (tx, rx) = mpsc::channel();
        let (stalled, resume) = mpsc::channel::<()>();
        let stderr = child.stderr.take().unwrap();
        let reader = std::thread::spawn(move || {
            let mut log = Vec::new();
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                for field in line.split_whitespace() {
                    for key in ["addr", "metrics_addr"] {
                        if let Some(value) =
                            field.strip_prefix(key).and_then(|f| f.strip_prefix('='))
                        {
                            let _ = tx.send((key, value.to_owned()));
                            if key == "addr" && stall {
                                let _ = resume.recv();
                            }
                        }
                    }
                }
                log.push(line);
            }
            log
        });
        // The metrics address, when there is one, is announced first.
        let mut metrics = None;
        let addr = loop {
            match rx.recv_timeout(Duration::from_secs(30)) {
                Ok(("addr", addr)) => break addr,
                Ok((_, addr)) => metrics = Some(addr.parse().unwrap()),
                Err(e) => panic!("server announces its address: {e}"),
            }
        };
        ServerProcess {
            child,
            url: format!("http://{addr}"),
            metrics,
            reader: Some(reader),
            stalled: stall.then_some(stalled),
        }
    }

    /// Waits for the process to exit, then for the end of its log.
    pub fn wait_with_log(&mut self) -> (std::process::ExitStatus, Vec<String>) {
        let status = self.child.wait().unwrap();
        let log = self.reader.take().expect("waited once").join().unwrap();
        (status, log)
    }

    /// SIGTERM: the graceful shutdown an orchestrator asks for.
    pub fn terminate(&self) {
        let pid = self.child.id().to_string();
        let sent = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        assert!(sent.success(), "kill -TERM {pid}: {sent:?}");
    }

    /// SIGKILL: no shutdown, no flushing, as a crash or an OOM kill.
    pub fn kill9(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A process's resident memory, from /proc.
pub fn rss_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    kib * 1024
}
