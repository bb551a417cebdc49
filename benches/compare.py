"""Compares usersvc builds, or one build under different settings, on one
scenario, against the grpcio peer measured in the same run. This is how each
change recorded in BENCHMARKS.md was measured.

Rounds are interleaved (peer, A, B, ..., peer, A, B, ...) so that a drift in
the machine's speed falls on every variant alike; the median of the rounds is
reported. One load generator (`--client`, default this tree's release build)
drives every variant, so only the server differs.

Usage:
  python benches/compare.py [--scenario get] [--rounds 3] [--store memory]
      NAME=BINARY[,--serve-flag=value...][,ENV_VAR=value...] ...

  e.g. before=/tmp/usersvc-before after=target/release/usersvc
       mt=target/release/usersvc ct=target/release/usersvc,--runtime=current-thread
"""

import argparse
import atexit
import os
import shutil
import statistics
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import run  # noqa: E402  (the same processes, peer and load tool as `make bench`)

SCENARIOS = {
    "get": ("get", ["--connections", "4", "--concurrency", "16", "--users", "1000"], "calls_per_second"),
    # One call at a time: latency with nothing to batch, where Nagle would show.
    "get-serial": ("get", ["--connections", "1", "--concurrency", "1", "--users", "1000"], "calls_per_second"),
    "list": ("list", ["--connections", "1", "--concurrency", "1", "--users", "10000"], "items_per_second"),
    "bulk": ("bulk", ["--connections", "1", "--concurrency", "1", "--batch", "1000"], "items_per_second"),
    "watch": ("watch", ["--connections", "10", "--watchers", "1000", "--write-rate", "1000"], "items_per_second"),
}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--scenario", default="get", choices=SCENARIOS)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", default="3s")
    parser.add_argument("--store", default="memory")
    parser.add_argument("--client", default=run.BIN)
    parser.add_argument("--no-peer", action="store_true", help="skip grpcio (it has no watch)")
    parser.add_argument("variants", nargs="+", metavar="NAME=BINARY[,FLAG...]")
    args = parser.parse_args()

    run.DURATION = args.duration
    run.BIN = args.client
    run.TOKEN = run.token()
    scenario, extra, key = SCENARIOS[args.scenario]
    variants = []
    for spec in args.variants:
        name, _, rest = spec.partition("=")
        binary, *flags = rest.split(",")
        variants.append((name, os.path.abspath(binary), flags))

    samples = {name: [] for name, _, _ in variants}
    samples["grpcio"] = []
    tmp = tempfile.mkdtemp(prefix="usersvc-compare-")
    atexit.register(shutil.rmtree, tmp, ignore_errors=True)
    for round_ in range(args.rounds):
        if not args.no_peer and scenario != "watch":
            peer, url = run.grpcio_peer()
            samples["grpcio"].append(run.bench(url, scenario, *extra))
            peer.stop()
        for name, binary, flags in variants:
            store = args.store if args.store == "memory" else f"sqlite://{tmp}/{name}-{round_}.db"
            server, url = serve(binary, store, tmp, flags)
            try:
                samples[name].append(run.bench(url, scenario, *extra))
            finally:
                server.stop()
        print(f"round {round_ + 1} of {args.rounds} done", file=sys.stderr, flush=True)

    peer_value = median(samples["grpcio"], key)
    peer_p99 = median(samples["grpcio"], "p99")
    print(f"scenario {args.scenario}, {args.rounds} rounds of {args.duration}, median")
    print("| variant | per s | p99 µs | ratio to grpcio | p99 ratio |")
    print("|---|---|---|---|---|")
    if peer_value:
        print(f"| grpcio | {peer_value:,.0f} | {peer_p99:,.0f} | 1.00x | 1.00x |")
    for name, _, flags in variants:
        value, p99 = median(samples[name], key), median(samples[name], "p99")
        ratio = f"{value / peer_value:.2f}x" if peer_value else ""
        p99_ratio = f"{peer_p99 / p99:.2f}x" if peer_value else ""
        print(f"| {name} {' '.join(flags)} | {value:,.0f} | {p99:,.0f} | {ratio} | {p99_ratio} |")


def serve(binary, store, tmp, flags):
    """`run.usersvc`, with another binary, more flags and environment."""
    env = dict(f.split("=", 1) for f in flags if not f.startswith("--"))
    saved = run.BIN
    run.BIN = binary
    try:
        # The variant's environment over run.usersvc's own (RUST_LOG=info).
        return run.usersvc(store, tmp, [f for f in flags if f.startswith("--")], env=env)
    finally:
        run.BIN = saved


def median(results, key):
    if not results:
        return None
    if key == "p99":
        return statistics.median(r["latency_us"]["p99"] for r in results)
    return statistics.median(r[key] for r in results)


if __name__ == "__main__":
    main()
