"""`make bench`: usersvc against its peers, measured side by side in one run
on this machine, written to BENCHMARKS.md with a generated SVG chart.

The server under test runs on CPU 0 and the load generator on CPU 1
(taskset). Auth, logging (to a file) and metrics stay on. Every figure is
a ratio to a peer measured in the same run; absolute numbers are shown but
mean little across machines.

Usage: python benches/run.py [--quick]
"""

import atexit
import json
import os
import platform
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(ROOT, "target", "release", "usersvc")
PYTHON = os.path.join(ROOT, ".venv", "bin", "python")
SECRET = "bench-secret-bench-secret-bench-secret!!"
QUICK = "--quick" in sys.argv
DURATION = "2s" if QUICK else "8s"
WARMUP = "1s" if QUICK else "2s"
PG_ADMIN = os.environ.get("USERSVC_PG_ADMIN", "postgres://root@127.0.0.1:5432/test")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        return int(re.search(r"VmRSS:\s+(\d+)", f.read()).group(1))


class Process:
    def __init__(self, args, cpu, env=None, wait_port=None, log=None):
        self.log = open(log or os.devnull, "w")
        self.proc = subprocess.Popen(["taskset", "-c", str(cpu), *args], stdout=subprocess.PIPE, stderr=self.log,
                                     env=dict(os.environ, **(env or {})), text=True)
        if wait_port:
            for _ in range(300):
                with socket.socket() as s:
                    if s.connect_ex(("127.0.0.1", wait_port)) == 0:
                        return
                time.sleep(0.05)
            raise RuntimeError(f"{args[0]} did not listen on {wait_port}")

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def usersvc(store, tmp, flags=(), env=None):
    port = free_port()
    args = [BIN, "serve", "--addr", f"127.0.0.1:{port}", "--store", store, "--data-dir", tmp, "--rate-limit", "0",
            "--metrics-addr", f"127.0.0.1:{free_port()}", "--watch-buffer", "65536",
            # One token opens all 10,000 watch streams of the RSS measurement.
            "--max-watch-streams", "20000", "--max-watch-streams-per-caller", "20000", *flags]
    server = Process(args, 0, {"USERSVC_JWT_SECRET": SECRET, "RUST_LOG": "info", **(env or {})}, port,
                     os.path.join(tmp, "usersvc.log"))
    return server, f"http://127.0.0.1:{port}"


def grpcio_peer():
    return peer([PYTHON, "server.py"], os.path.join(ROOT, "tests", "python"))


STOCK = os.path.join(ROOT, "benches", "stock_tonic", "target", "release", "stock-tonic")


def stock_peer():
    """A stock tonic-build server for the same .proto, with the memory
    store's semantics and no layers (benches/stock_tonic/)."""
    return peer([STOCK], ROOT)


def peer(command, cwd):
    """A peer server on CPU 0 that prints `PORT <n>` once it listens."""
    proc = subprocess.Popen(["taskset", "-c", "0", *command], cwd=cwd, stdout=subprocess.PIPE, text=True)
    port = int(proc.stdout.readline().split()[1])

    class Peer:
        def stop(self):
            proc.terminate()
            proc.wait(timeout=15)

    peer = Peer()
    peer.proc = proc
    return peer, f"http://127.0.0.1:{port}"


def trace_sink():
    """An OTLP/HTTP receiver that takes every batch and keeps nothing: the
    collector of the traces A/B, in this process (not on the server's CPU)."""
    import http.server
    import threading

    class Sink(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self):
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Sink)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"


def token():
    out = subprocess.run([BIN, "token", "--sub", "bench", "--role", "admin", "--ttl", "1h"],
                         env=dict(os.environ, USERSVC_JWT_SECRET=SECRET), check=True, capture_output=True, text=True)
    return out.stdout.strip()


def bench(url, scenario, *extra):
    cmd = ["taskset", "-c", "1", BIN, "bench", scenario, "--addr", url, "--duration", DURATION, "--warmup", WARMUP,
           "--output", "json", *extra]
    out = subprocess.run(cmd, env=dict(os.environ, USERSVC_TOKEN=TOKEN), check=True, capture_output=True, text=True)
    return json.loads(out.stdout)


WATCH_ARGS = ["--connections", "10", "--watchers", "1000", "--write-rate", "1000"]


def cpu_seconds(pid):
    """User and system CPU time of process `pid` so far."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def bench_watch(url, server_pid):
    """The watch scenario, with the share of its CPU that the server and
    the load tool each used over the middle of the measured time: which
    of the two is the limit."""
    warmup, duration = float(WARMUP.rstrip("s")), float(DURATION.rstrip("s"))
    cmd = ["taskset", "-c", "1", BIN, "bench", "watch", "--addr", url, "--duration", DURATION, "--warmup", WARMUP,
           "--output", "json", *WATCH_ARGS]
    tool = subprocess.Popen(cmd, env=dict(os.environ, USERSVC_TOKEN=TOKEN), stdout=subprocess.PIPE, text=True)
    # Setup (1,000 streams opened) takes about a second; sample inside the run.
    time.sleep(1.5 + warmup + duration / 4)
    before = (cpu_seconds(server_pid), cpu_seconds(tool.pid), time.monotonic())
    time.sleep(duration / 2)
    after = (cpu_seconds(server_pid), cpu_seconds(tool.pid), time.monotonic())
    out, _ = tool.communicate()
    if tool.returncode != 0:
        raise RuntimeError(f"bench watch failed with {tool.returncode}")
    report = json.loads(out)
    elapsed = after[2] - before[2]
    report["server_cpu"] = (after[0] - before[0]) / elapsed
    report["tool_cpu"] = (after[1] - before[1]) / elapsed
    return report


def postgres_url():
    db = f"usersvc_bench_{int(time.time())}"
    if subprocess.run(["psql", PG_ADMIN, "-qc", f"CREATE DATABASE {db}"], capture_output=True).returncode != 0:
        return None, None
    return PG_ADMIN.rsplit("/", 1)[0] + "/" + db, db


def h2load_get(url, user_id):
    """GetUser through h2load, to check the load tool's own numbers."""
    if not subprocess.run(["which", "h2load"], capture_output=True).returncode == 0:
        return None
    message = b"\x0a" + bytes([len(user_id)]) + user_id.encode()
    body = b"\x00" + len(message).to_bytes(4, "big") + message
    with tempfile.NamedTemporaryFile(delete=False) as f:
        f.write(body)
    seconds = int(DURATION.rstrip("s"))
    cmd = ["taskset", "-c", "1", "h2load", "-D", str(seconds), "-c", "4", "-m", "16", "-d", f.name,
           "-H", "content-type: application/grpc", "-H", "te: trailers",
           f"{url}/techoral.users.v1.UserService/GetUser"]
    out = subprocess.run(cmd, capture_output=True, text=True).stdout
    match = re.search(r"finished in [\d.]+\w+, ([\d.]+) req/s", out)
    return float(match.group(1)) if match else None


def h2load_json_h1(url, user_id):
    """Connect GetUser as plain HTTP/1.1 JSON (a REST-style POST), from
    h2load --h1: what a REST+JSON client costs the same server."""
    if not subprocess.run(["which", "h2load"], capture_output=True).returncode == 0:
        return None
    with tempfile.NamedTemporaryFile(delete=False) as f:
        f.write(json.dumps({"userId": user_id}).encode())
    seconds = int(DURATION.rstrip("s"))
    cmd = ["taskset", "-c", "1", "h2load", "--h1", "-D", str(seconds), "-c", "64", "-d", f.name,
           "-H", "content-type: application/json", f"{url}/techoral.users.v1.UserService/GetUser"]
    out = subprocess.run(cmd, capture_output=True, text=True).stdout
    match = re.search(r"finished in [\d.]+\w+, ([\d.]+) req/s", out)
    ok = re.search(r"status codes: (\d+) 2xx", out)
    return float(match.group(1)) if match and ok and int(ok.group(1)) > 0 else None


RESULTS = []
# GetUser over each protocol, on one server in one run: name -> report.
PROTOCOLS = {}


def result(name, value, unit, peer_name=None, peer_value=None, target=None, higher_is_better=True, bound=None):
    """One figure; `target` is a minimum ratio to the peer, `bound` an
    absolute limit such as ("<", 20)."""
    ratio = None
    if peer_value:
        ratio = value / peer_value if higher_is_better else peer_value / value
    met = None if target is None or ratio is None else ratio >= target
    if bound:
        op, limit = bound
        met = value < limit if op == "<" else value >= limit
    RESULTS.append(dict(name=name, value=value, unit=unit, peer=peer_name, peer_value=peer_value, ratio=ratio,
                        target=target, bound=bound, met=met))
    shown = f"{name}: {value:,.0f} {unit}"
    if ratio is not None:
        shown += f" vs {peer_name} {peer_value:,.0f}: {ratio:.2f}x"
    print(shown, flush=True)


def main():
    global TOKEN
    TOKEN = token()
    tmp = tempfile.mkdtemp(prefix="usersvc-bench-")
    atexit.register(shutil.rmtree, tmp, ignore_errors=True)
    get_args = ["--connections", "4", "--concurrency", "16", "--users", "1000"]

    # usersvc (memory) against the grpcio server with the seed's behaviour.
    peer, peer_url = grpcio_peer()
    peer_get = bench(peer_url, "get", *get_args)
    peer_list = bench(peer_url, "list", "--connections", "1", "--concurrency", "1", "--users", "10000")
    peer_bulk = bench(peer_url, "bulk", "--connections", "1", "--concurrency", "1", "--batch", "1000")
    peer.stop()
    stock, stock_url = stock_peer()
    stock_get = bench(stock_url, "get", *get_args)
    stock_list = bench(stock_url, "list", "--connections", "1", "--concurrency", "1", "--users", "10000")
    stock_bulk = bench(stock_url, "bulk", "--connections", "1", "--concurrency", "1", "--batch", "1000")
    stock.stop()
    # Its watch on a fresh process: a broadcast channel that CreateUser
    # sends to, the fan-out a team would write first.
    stock, stock_url = stock_peer()
    stock_watch = bench_watch(stock_url, stock.proc.pid)
    stock.stop()

    # The access log's cost: the same server at info (one line a call) and
    # at warn (none), in interleaved rounds; the medians' ratio.
    logged = {"info": [], "warn": []}
    for _ in range(1 if QUICK else 3):
        for level in logged:
            server, url = usersvc("memory", tmp, env={"RUST_LOG": level})
            logged[level].append(bench(url, "get", *get_args)["calls_per_second"])
            server.stop()

    # Traces' cost: the same server with traces off (no endpoint: what every
    # run above measured) and on, every call sampled and exported to a sink,
    # in interleaved rounds. What "off" costs against a build without traces
    # is an A/B of two releases, in the log below.
    traced = {"off": [], "on": []}
    sink, sink_url = trace_sink()
    for _ in range(1 if QUICK else 3):
        for mode in traced:
            env = {} if mode == "off" else {"OTEL_EXPORTER_OTLP_ENDPOINT": sink_url}
            server, url = usersvc("memory", tmp, env=env)
            traced[mode].append(bench(url, "get", *get_args)["calls_per_second"])
            server.stop()
    sink.shutdown()

    # Memory on a server of its own, so that no earlier load inflates it.
    server, url = usersvc("memory", tmp)
    time.sleep(0.5)
    result("idle RSS", rss_kib(server.proc.pid) / 1024, "MiB", bound=("<", 20))
    watchers = subprocess.Popen(["taskset", "-c", "1", BIN, "bench", "watch", "--addr", url, "--connections", "100",
                                 "--watchers", "10000", "--write-rate", "10", "--duration", "6s", "--warmup", "0s",
                                 "--output", "json"], env=dict(os.environ, USERSVC_TOKEN=TOKEN), stdout=subprocess.PIPE)
    time.sleep(5)
    result("RSS with 10,000 watch streams", rss_kib(server.proc.pid) / 1024, "MiB", bound=("<", 200))
    watchers.wait(timeout=60)
    server.stop()

    def store_scenarios(url):
        return {
            "get": bench(url, "get", *get_args),
            "list": bench(url, "list", "--connections", "1", "--concurrency", "1", "--users", "10000"),
            "bulk": bench(url, "bulk", "--connections", "1", "--concurrency", "1", "--batch", "1000"),
            # Last, so that the users it adds weigh on no other figure. On
            # SQLite (FULL) a commit waits for the disk; the creates that
            # wait meanwhile are committed together.
            "create": bench(url, "create", "--connections", "4", "--concurrency", "16"),
        }

    # The embedded default against memory: interleaved rounds, each on a
    # fresh server and a fresh file, so that drift in the machine and the
    # file's growth fall on both alike; each figure is the median round.
    rounds = {"memory": [], "sqlite": []}
    for round_number in range(1 if QUICK else 3):
        for name in rounds:
            store = "memory" if name == "memory" else f"sqlite://{tmp}/round-{round_number}/users.db"
            server, url = usersvc(store, tmp, ["--sqlite-synchronous", "full"])
            rounds[name].append(store_scenarios(url))
            server.stop()
            # Gone before the kernel writes it back, so that the write-back
            # of a round's file does not fall on the next round.
            shutil.rmtree(os.path.join(tmp, f"round-{round_number}"), ignore_errors=True)
    measured = {}
    for name, reports in rounds.items():
        measured[name] = {}
        for scenario, key in (("get", "calls_per_second"), ("create", "calls_per_second"),
                              ("list", "items_per_second"), ("bulk", "items_per_second")):
            ordered = sorted(reports, key=lambda r: r[scenario][key])
            measured[name][scenario] = ordered[len(ordered) // 2][scenario]

    stores = {"memory": "memory", "sqlite": None}
    pg, pg_db = postgres_url()
    if pg:
        stores["postgres"] = pg
    for name, store in stores.items():
        if name == "sqlite":
            continue
        server, url = usersvc(store, tmp)
        if name != "memory":
            measured[name] = store_scenarios(url)
        if name == "memory":
            # A fresh server: one user for h2load to read.
            subprocess.run([BIN, "create", "--addr", url, "--name", "H2load", "--email", "h2load@example.com"],
                           check=True, capture_output=True, env=dict(os.environ, USERSVC_TOKEN=TOKEN))
            listed = subprocess.run([BIN, "list", "--addr", url, "--limit", "1", "--output", "json"], check=True,
                                    capture_output=True, text=True, env=dict(os.environ, USERSVC_TOKEN=TOKEN)).stdout
            h2load_rps = h2load_get(url, json.loads(listed)["id"])
            if h2load_rps:
                result("GetUser req/s by h2load (which sends no token), to check the load tool", h2load_rps, "req/s", "usersvc bench", measured[name]["get"]["calls_per_second"])
            # GetUser over each protocol, from one plain HTTP/2 client, in
            # interleaved rounds so that drift in the machine falls on all.
            rounds = 1 if QUICK else 2
            for _ in range(rounds):
                for protocol in ("grpc-raw", "grpc-web", "connect-proto", "connect-json"):
                    report = bench(url, "get", *get_args, "--protocol", protocol)
                    best = PROTOCOLS.get(protocol)
                    if best is None or report["calls_per_second"] > best["calls_per_second"]:
                        PROTOCOLS[protocol] = report
            grpc = PROTOCOLS["grpc-raw"]
            for protocol in ("grpc-web", "connect-proto", "connect-json"):
                p = PROTOCOLS[protocol]
                result(f"GetUser calls/s over {protocol}", p["calls_per_second"], "req/s", "gRPC", grpc["calls_per_second"])
                result(f"GetUser bytes on the wire over {protocol}", p["bytes_per_call"], "B/call", "gRPC",
                       grpc["bytes_per_call"], higher_is_better=False)
            h1_json = h2load_json_h1(url, json.loads(listed)["id"])
            if h1_json and h2load_rps:
                result("GetUser as HTTP/1.1 JSON POSTs (h2load --h1, 64 connections)", h1_json, "req/s",
                       "gRPC by h2load", h2load_rps)
            watch = bench_watch(url, server.proc.pid)
            result("WatchUserEvents p99 delivery, 1000 watchers at 1000 writes/s", watch["latency_us"]["p99"] / 1000, "ms", bound=("<", 10))
            result("WatchUserEvents p99 delivery, against stock tonic's broadcast fan-out", watch["latency_us"]["p99"] / 1000,
                   "ms", "stock tonic", stock_watch["latency_us"]["p99"] / 1000, higher_is_better=False)
            result("WatchUserEvents p50 delivery, against stock tonic's broadcast fan-out", watch["latency_us"]["p50"] / 1000,
                   "ms", "stock tonic", stock_watch["latency_us"]["p50"] / 1000, higher_is_better=False)
            result("WatchUserEvents deliveries (of 1,000,000/s offered)", watch["items_per_second"], "per s")
            result("WatchUserEvents: the server's CPU (of its one)", 100 * watch["server_cpu"], "%",
                   "stock tonic", 100 * stock_watch["server_cpu"], higher_is_better=False)
            result("WatchUserEvents: the load tool's CPU (of its one)", 100 * watch["tool_cpu"], "%",
                   "with stock tonic", 100 * stock_watch["tool_cpu"], higher_is_better=False)
            # What an idle watcher costs the calls around it: CreateUser with
            # 10,000 watch streams following users no write touches, against
            # none, on the same server.
            create_alone = bench(url, "create", "--connections", "4", "--concurrency", "16")
            create_idle = bench(url, "create", "--connections", "4", "--concurrency", "16", "--idle-watchers", "10000")
            result("CreateUser p99 with 10,000 idle watchers of other users", create_idle["latency_us"]["p99"], "µs",
                   "no watchers", create_alone["latency_us"]["p99"], 1 / 1.5, higher_is_better=False)
        server.stop()
    if pg_db:
        subprocess.run(["psql", PG_ADMIN, "-qc", f"DROP DATABASE IF EXISTS {pg_db} WITH (FORCE)"], capture_output=True)

    mem = measured["memory"]
    result("GetUser req/s", mem["get"]["calls_per_second"], "req/s", "grpcio", peer_get["calls_per_second"], 10)
    result("GetUser p99", mem["get"]["latency_us"]["p99"], "µs", "grpcio", peer_get["latency_us"]["p99"], 10, higher_is_better=False)
    result("ListUsers users/s", mem["list"]["items_per_second"], "users/s", "grpcio", peer_list["items_per_second"])
    result("ListUsers from memory", mem["list"]["items_per_second"], "users/s", bound=(">=", 1_000_000))
    result("GetUser req/s, every layer on, against stock tonic-build", mem["get"]["calls_per_second"], "req/s", "stock tonic", stock_get["calls_per_second"], 1.25)
    result("ListUsers users/s, against stock tonic-build", mem["list"]["items_per_second"], "users/s", "stock tonic", stock_list["items_per_second"], 1.1)
    result("BulkCreateUsers users/s, against stock tonic-build", mem["bulk"]["items_per_second"], "users/s", "stock tonic", stock_bulk["items_per_second"], 1.25)
    median = lambda xs: sorted(xs)[len(xs) // 2]
    result("GetUser req/s with the access log (info), against without (warn)", median(logged["info"]), "req/s", "warn", median(logged["warn"]), 0.95)
    result("GetUser req/s with traces on (every call sampled and exported), against off", median(traced["on"]), "req/s", "off", median(traced["off"]))
    result("BulkCreateUsers users/s", mem["bulk"]["items_per_second"], "users/s", "grpcio", peer_bulk["items_per_second"])
    result("BulkCreateUsers into memory", mem["bulk"]["items_per_second"], "users/s", bound=(">=", 350_000))
    if "sqlite" in measured:
        result("BulkCreateUsers into SQLite (FULL)", measured["sqlite"]["bulk"]["items_per_second"], "users/s", bound=(">=", 50_000))
    targets = {"get": 0.7, "create": None, "list": 0.5, "bulk": 0.7}
    for name in stores:
        if name == "memory":
            continue
        for scenario, key in (("get", "calls_per_second"), ("create", "calls_per_second"),
                              ("list", "items_per_second"), ("bulk", "items_per_second")):
            label = {"sqlite": "SQLite (FULL), median of interleaved rounds", "postgres": "PostgreSQL"}[name]
            result(f"{scenario} on {label}", measured[name][scenario][key], "per s", "memory",
                   mem[scenario][key], targets[scenario] if name == "sqlite" else None)
    write_report()


def chart():
    bars = [r for r in RESULTS if r["ratio"] is not None]
    # Bars start after the longest label (about 6.5 px a character).
    left = 20 + max(int(6.5 * len(f'{r["name"]} / {r["peer"]}')) for r in bars)
    width, row = left + 400, 28
    height = 40 + row * len(bars)
    top = max([r["ratio"] for r in bars] + [r["target"] or 0 for r in bars] + [1])
    scale = (width - left - 10) / top
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" font-size="12">',
             '<text x="10" y="20" font-weight="bold">Ratio to the peer measured in the same run (longer is better)</text>']
    for i, r in enumerate(bars):
        y = 34 + i * row
        w = max(1, r["ratio"] * scale)
        colour = "#2a9d8f" if r["met"] in (True, None) else "#e76f51"
        parts.append(f'<text x="10" y="{y + 14}">{r["name"]} / {r["peer"]}</text>')
        parts.append(f'<rect x="{left}" y="{y}" width="{w:.1f}" height="18" fill="{colour}"/>')
        parts.append(f'<text x="{left + 5 + w:.1f}" y="{y + 14}">{r["ratio"]:.2f}x</text>')
        if r["target"]:
            x = left + r["target"] * scale
            parts.append(f'<line x1="{x:.1f}" y1="{y - 2}" x2="{x:.1f}" y2="{y + 20}" stroke="black" stroke-dasharray="3,2"/>')
    parts.append("</svg>")
    with open(os.path.join(ROOT, "benches", "benchmarks.svg"), "w") as f:
        f.write("\n".join(parts) + "\n")


def write_report():
    chart()
    rustc = subprocess.run(["rustc", "--version"], capture_output=True, text=True).stdout.strip()
    cpu = re.search(r"model name\s*:\s*(.*)", open("/proc/cpuinfo").read()).group(1)
    lines = [
        "# Benchmarks",
        "",
        "Written by `make bench` (`make bench-quick` for a short run), down to the log of changes, which is kept.",
        "",
        f"- Machine: {os.cpu_count()} × {cpu}, {platform.system()} {platform.release()}; {rustc}",
        f"- Run: {'quick' if QUICK else 'full'}, {DURATION} per measurement after {WARMUP} of warm-up, "
        f"server on CPU 0 and load generator on CPU 1 (taskset), so the server's default runtime is one thread; "
        "auth (a token on every call), logging at info (to a file) and metrics on.",
        "- Commands: `usersvc bench get --connections 4 --concurrency 16`, `usersvc bench list|bulk --connections 1 --concurrency 1`, "
        "`usersvc bench watch --connections 10 --watchers 1000 --write-rate 1000`; the peers are `tests/python/server.py` (grpcio) "
        "and `benches/stock_tonic/` (a stock tonic-build server generated from the same .proto by tonic-prost-build with protox, "
        "with the memory store's semantics and no layers; a crate outside usersvc's dependency tree).",
        "",
        "![ratios](benches/benchmarks.svg)",
        "",
        "| measurement | usersvc | peer | peer value | ratio | target | met |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in RESULTS:
        peer_value = f"{r['peer_value']:,.0f}" if r["peer_value"] else ""
        ratio = f"{r['ratio']:.2f}x" if r["ratio"] is not None else ""
        target = f"≥ {r['target']}x" if r["target"] else ""
        if r["bound"]:
            target = f"{'<' if r['bound'][0] == '<' else '≥'} {r['bound'][1]:,} {r['unit']}"
        met = {True: "yes", False: "**no**", None: ""}[r["met"]]
        lines.append(f"| {r['name']} | {r['value']:,.1f} {r['unit']} | {r['peer'] or ''} | {peer_value} | {ratio} | {target} | {met} |")
    if PROTOCOLS:
        lines += [
            "",
            "## One server, four protocols",
            "",
            "GetUser from one plain HTTP/2 client (`usersvc bench get --protocol …`), the same server, the same run; "
            "bytes are both directions on the wire (headers, framing and TCP payload), per call, HPACK-compressed headers included.",
            "",
            "| protocol | calls/s | p99 µs | bytes/call |",
            "|---|---|---|---|",
        ]
        for name, p in PROTOCOLS.items():
            lines.append(f"| {name} | {p['calls_per_second']:,.0f} | {p['latency_us']['p99']:,} | {p['bytes_per_call']:,.0f} |")
        grpc, json_ = PROTOCOLS["grpc-raw"], PROTOCOLS["connect-json"]
        speed = grpc["calls_per_second"] / json_["calls_per_second"]
        size = json_["bytes_per_call"] / grpc["bytes_per_call"]
        lines += [
            "",
            f"The seed says gRPC is \"5–10x faster than REST+JSON\" with \"3–10x smaller\" payloads. Here, from the same client to "
            f"the same server, gRPC did {speed:.2f}x the calls of Connect JSON (a JSON POST, what a REST client sends) and moved "
            f"{size:.2f}x fewer bytes per call. "
            + ("So the claim holds here." if speed >= 5 and size >= 3 else
               "So the claim does not hold here: for a message this small the cost is the server's work and HTTP/2, "
               "not the encoding, and headers outweigh the payload."),
        ]
    path = os.path.join(ROOT, "BENCHMARKS.md")
    kept = ""
    if os.path.exists(path):
        text = open(path).read()
        if KEEP in text:
            kept = text[text.index(KEEP):]
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
        if kept:
            f.write("\n" + kept)


# What follows this line in BENCHMARKS.md is written by hand, and kept.
KEEP = "<!-- Written by hand below this line; make bench keeps it. -->"


if __name__ == "__main__":
    main()
