"""SearchUsers on 1,000,000 users, in SQLite and in PostgreSQL, against
the targets of the search issue: the last step of `make bench` (alone:
`make bench-search`). Prints a table, and writes it into BENCHMARKS.md as
the section "Search on 1,000,000 users", just above the hand-written part.

Each store gets a fresh server (on CPU 0) and a fresh database, filled with
1,000,000 users through BulkCreateUsers. The client is grpcio with stubs
generated from the .proto, one call at a time, on CPU 1; each query runs
ROUNDS times after a warm-up and the median is reported. A grpcio call
costs about 0.2 ms of its own, which the figures include.
"""

import os
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "python"))
import grpc  # noqa: E402
from conftest import PB, RPC  # noqa: E402

import run  # noqa: E402

USERS = 200_000 if run.QUICK else 1_000_000
BATCH = 25_000
ROUNDS = 30
SURNAMES = ["Smith", "Jones", "Garcia", "Müller", "Rossi", "Nguyen", "Kowalski", "Tanaka", "Okafor", "Silva"]
FIRST = ["Ada", "Grace", "Alan", "Linus", "Barbara", "Ken", "Margaret", "Dennis", "Frances", "Edsger", "Radia"]


def fill(stub, meta):
    def batch(start):
        for i in range(start, min(start + BATCH, USERS)):
            # "smith" is in one name of 97: a rare substring, as a person's
            # name in a large directory is.
            surname = "Smith" if i % 97 == 0 else SURNAMES[1 + i % 9]
            yield PB.CreateUserRequest(
                name=f"{FIRST[i % 11]} {surname} {i}", email=f"user{i:07d}@example.com",
                labels={"team": f"t{i % 1000}", "site": f"s{i % 7}"},
            )
    for start in range(0, USERS, BATCH):
        stub.BulkCreateUsers(batch(start), metadata=meta, timeout=600)


def median_ms(call, rounds=ROUNDS):
    call()
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        call()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def measure(url, meta, analyze=None):
    channel = grpc.insecure_channel(url.removeprefix("http://"))
    stub = RPC.UserServiceStub(channel)
    started = time.time()
    fill(stub, meta)
    filled = time.time() - started
    if analyze:
        analyze()

    def search(filter, order_by="", token="", size=50):
        return stub.SearchUsers(PB.SearchUsersRequest(filter=filter, order_by=order_by, page_size=size,
                                                      page_token=token), metadata=meta, timeout=60)
    rows = {}
    rows["email prefix (email = \"user0123*\")"] = (median_ms(lambda: search('email = "user0123*"')), 5)
    rows["exact label (labels.team = \"t42\")"] = (median_ms(lambda: search('labels.team = "t42"')), 5)
    rows["first page sorted by name, no filter"] = (median_ms(lambda: search("", "name")), 5)
    # Not a target: a label that a seventh of the directory has, in name
    # order, which neither engine serves from one index.
    rows["first page sorted by name desc, one site of 7 (labels.site = s3)"] = (
        median_ms(lambda: search("labels.site = s3", "name desc"), rounds=10), None)
    rows["substring (name:\"smith\")"] = (median_ms(lambda: search('name:"smith"'), rounds=10), 50)
    # A page 1,000 pages deep, reached by walking the tokens.
    token = ""
    for _ in range(1000):
        token = search("", "name", token).next_page_token
    deep = median_ms(lambda: search("", "name", token))
    first = rows["first page sorted by name, no filter"][0]
    rows["page 1,000 sorted by name (against the first page)"] = (deep, first * 1.5)
    total = search("").total_size
    assert total == USERS, total
    channel.close()
    return filled, rows


def main():
    run.TOKEN = run.token()
    meta = [("authorization", f"Bearer {run.TOKEN}")]
    results = {}
    with tempfile.TemporaryDirectory(prefix="usersvc-search-") as tmp:
        server, url = run.usersvc(f"sqlite://{tmp}/users.db", tmp)
        try:
            results["SQLite"] = measure(url, meta)
        finally:
            server.stop()
    pg, db = run.postgres_url()
    if pg:
        with tempfile.TemporaryDirectory(prefix="usersvc-search-") as tmp:
            server, url = run.usersvc(pg, tmp)
            # What autovacuum does within a minute of a load this size:
            # the planner's statistics, without which it walks the wrong index.
            def analyze():
                subprocess.run(["psql", pg, "-qc", "VACUUM ANALYZE"], check=True, capture_output=True)
            try:
                results["PostgreSQL"] = measure(url, meta, analyze)
            finally:
                server.stop()
                subprocess.run(["psql", run.PG_ADMIN, "-qc", f"DROP DATABASE {db}"], capture_output=True)
    lines = [f"| query on {USERS:,} users | " + " | ".join(f"{s} p50" for s in results) + " | target |",
             "|---|" + "---|" * len(results) + "---|"]
    names = list(next(iter(results.values()))[1])
    for name in names:
        cells = []
        for store, (_, rows) in results.items():
            value, target = rows[name]
            verdict = "" if target is None else f" ({'met' if value <= target else 'not met'})"
            cells.append(f"{value:.1f} ms{verdict}")
        target = next(iter(results.values()))[1][name][1]
        lines.append(f"| {name} | " + " | ".join(cells) + " | " + ("none" if target is None else f"≤ {target:.0f} ms") + " |")
    lines.append("")
    for store, (filled, _) in results.items():
        lines.append(f"- {store}: filled with {USERS:,} users through BulkCreateUsers in {filled:.0f} s.")
    print("\n".join(lines))
    if not run.QUICK:
        write_section(lines)


SECTION = "## Search on 1,000,000 users"
MARKER = "<!-- Written by hand below this line; make bench keeps it. -->"


def write_section(lines):
    """Puts the table above the hand-written part, in place of the last one."""
    path = os.path.join(run.ROOT, "BENCHMARKS.md")
    text = open(path).read()
    generated, hand = text.split(MARKER, 1)
    if SECTION in generated:
        generated = generated[:generated.index(SECTION)].rstrip() + "\n\n"
    section = [SECTION, "",
               "SearchUsers through grpcio, one call at a time, median of 30 calls (10 for the scans) after a warm-up; "
               "`benches/search.py`. The page is 50 users in the order named (SearchUsers' default: created_at), "
               "and every call also counts all the matches for `total_size`.", "", *lines, ""]
    open(path, "w").write(generated + "\n".join(section) + "\n" + MARKER + hand)


if __name__ == "__main__":
    main()
