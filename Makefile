# usersvc: `make run` starts the server, `make test` runs every test.
# Nothing here needs protoc: the crate builds with plain cargo. The
# cross-language tests install their own Python and Node packages.

CARGO ?= cargo
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
NODE_DIR := tests/node

.PHONY: run build test lint check-no-codegen rust-tests python-env node-env browser-tools \
	vectors vectors-check python-interop node-interop soak soak-short bench bench-search bench-quick bench-tools bench-peer bench-codec \
	fuzz fuzz-build fuzz-merge

## Start the server on 127.0.0.1:50051 with the embedded default store.
run:
	$(CARGO) run --release -- serve

build:
	$(CARGO) build --release

## Every test: the design-card checks, formatting and lints, the Rust tests
## (the Python-server interop one included), the golden vectors, and the
## Python and Node clients against a running server.
test: check-no-codegen lint rust-tests vectors-check python-interop node-interop soak-short

lint:
	$(CARGO) fmt --all -- --check
	rustfmt --edition 2024 --check tests/fuzz/fuzz_targets/*.rs
	$(CARGO) clippy --all-targets -- -D warnings

## The design card: no build script, and no code generator in any part of
## the dependency tree (normal, build or dev).
check-no-codegen:
	@if [ -e build.rs ]; then echo "error: build.rs exists; usersvc has no build script"; exit 1; fi
	@if $(CARGO) tree --edges all --prefix none | grep -E '^(prost-build|tonic-build|tonic-prost-build|protobuf-src) '; then \
		echo "error: a code generator is in the dependency tree (above)"; exit 1; \
	fi
	@echo "no build.rs, no code generator in the dependency tree"

## PostgreSQL tests run in a database of their own (tests/with-postgres.sh).
rust-tests: python-env
	tests/with-postgres.sh $(CARGO) test -- --include-ignored

## The official runtimes: grpcio, grpcio-tools and protobuf, pinned.
python-env: $(VENV)/.installed
$(VENV)/.installed: tests/python/requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r tests/python/requirements.txt
	touch $@

## @grpc/grpc-js and @grpc/proto-loader, exactly as the lock file says.
node-env: $(NODE_DIR)/node_modules/.installed
$(NODE_DIR)/node_modules/.installed: $(NODE_DIR)/package.json $(NODE_DIR)/package-lock.json
	cd $(NODE_DIR) && npm ci --no-audit --no-fund
	touch $@

## Debian's chromium, for the browser test (tests/node/browser.test.mjs).
browser-tools:
	@command -v chromium >/dev/null || (apt-get update -qq && apt-get install -y -qq chromium chromium-driver)

## Rewrite tests/vectors/*.hex from Google's protobuf runtime.
vectors: python-env
	$(PY) tests/vectors/generate.py tests/vectors

## The committed vectors must be what the script writes today.
vectors-check: python-env
	@tmp=$$(mktemp -d) && trap 'rm -rf "$$tmp"' EXIT && $(PY) tests/vectors/generate.py $$tmp && \
	if diff -r -x generate.py -x __pycache__ tests/vectors $$tmp; then echo "golden vectors are current"; \
	else echo "error: tests/vectors differ from what generate.py writes: run make vectors"; exit 1; fi

## The clients run against target/debug/usersvc, built as the Rust tests
## build it (`cargo test --no-run`): a plain `cargo build` would compile the
## dependencies again with other features.
python-interop: python-env
	$(CARGO) test --no-run --quiet
	cd tests/python && ../../$(PY) -m pytest -q

node-interop: node-env browser-tools
	$(CARGO) test --no-run --quiet
	cd $(NODE_DIR) && node --test --test-timeout=60000

## The soak (usersvc soak): two replicas on PostgreSQL, watchers that resume,
## a PostgreSQL restart at a third of the run and a replica killed with
## SIGKILL at two thirds. Fails on any change missed, repeated or reordered.
## `make test` runs a short one on the debug build; `make soak` the full one
## BENCHMARKS.md records.
SOAK_PG ?= postgres://root@127.0.0.1:5432/test
PG_RESTART ?= pg_ctlcluster --skip-systemctl-redirect $$(ls /etc/postgresql) main restart
soak-short:
	$(CARGO) test --no-run --quiet
	target/debug/usersvc soak --postgres '$(SOAK_PG)' --pg-restart '$(PG_RESTART)' \
		--watchers 300 --rate 200 --duration 30s --warmup 8s --log-dir target/soak-short

soak:
	$(CARGO) build --release --bin usersvc
	target/release/usersvc soak --postgres '$(SOAK_PG)' --pg-restart '$(PG_RESTART)' \
		--watchers 10000 --star-watchers 100 --seed-users 10000 --rate 1000 --duration 10m --warmup 60s \
		--log-dir target/soak

## Benchmarks: usersvc against a grpcio peer and across its stores, side by
## side in one run, written to BENCHMARKS.md. Installs h2load (nghttp2).
bench-tools:
	@command -v h2load >/dev/null || (apt-get update -qq && apt-get install -y -qq nghttp2-client)

bench: python-env bench-tools bench-peer
	$(CARGO) build --release --bin usersvc
	$(PY) benches/run.py
	cd benches && ../$(PY) search.py

## SearchUsers on 1,000,000 users in SQLite and PostgreSQL (benches/search.py).
bench-search: python-env
	$(CARGO) build --release --bin usersvc
	cd benches && ../$(PY) search.py

## The same in under two minutes, for use while developing.
bench-quick: python-env bench-tools bench-peer
	$(CARGO) build --release --bin usersvc
	$(PY) benches/run.py --quick

## The stock tonic-build peer: a crate of its own (benches/stock_tonic/),
## never in usersvc's dependency tree, generated with protox (no protoc).
bench-peer:
	cd benches/stock_tonic && $(CARGO) build --release --locked

## Criterion micro-benchmarks of encoding and decoding each message.
bench-codec:
	$(CARGO) bench --bench codec

## Fuzzing with libFuzzer on the stable toolchain: the flags below are the
## coverage instrumentation cargo-fuzz turns on. Each target runs for
## FUZZ_SECONDS from the committed corpus, and says how many executions it
## did; what it finds stays in target/fuzz/found until `make fuzz-merge`.
## A crash stops it, with the input in target/fuzz/artifacts.
## `make test` replays the corpus (tests/it/fuzzing.rs).
FUZZ_SECONDS ?= 60
FUZZ_TARGETS := decode service
FUZZ_TRIPLE := $(shell rustc -vV | sed -n 's/^host: //p')
FUZZ_BIN := target/fuzz/$(FUZZ_TRIPLE)/release
FUZZ_FLAGS := -Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
	-Cllvm-args=-sanitizer-coverage-inline-8bit-counters \
	-Cllvm-args=-sanitizer-coverage-pc-table \
	-Cllvm-args=-sanitizer-coverage-trace-compares \
	--cfg fuzzing -Cdebug-assertions -Coverflow-checks

fuzz-build:
	cd tests/fuzz && CARGO_TARGET_DIR=../../target/fuzz RUSTFLAGS="$(FUZZ_FLAGS)" \
		$(CARGO) build --release --target $(FUZZ_TRIPLE)

fuzz: fuzz-build
	@total=0; for t in $(FUZZ_TARGETS); do \
		mkdir -p target/fuzz/found/$$t target/fuzz/artifacts/$$t; \
		$(FUZZ_BIN)/$$t -max_total_time=$(FUZZ_SECONDS) -timeout=10 -rss_limit_mb=2048 \
			-print_final_stats=1 -artifact_prefix=target/fuzz/artifacts/$$t/ \
			target/fuzz/found/$$t tests/fuzz/corpus/$$t > target/fuzz/$$t.log 2>&1 \
			|| { tail -40 target/fuzz/$$t.log; echo "fuzz $$t: crashed; input in target/fuzz/artifacts/$$t"; exit 1; }; \
		runs=$$(sed -n 's/^stat::number_of_executed_units: *//p' target/fuzz/$$t.log); \
		echo "fuzz $$t: $$runs executions in $(FUZZ_SECONDS) s, no crash"; \
		total=$$((total + runs)); \
	done; echo "fuzz: $$total executions in all"

## Keeps, of the committed corpus and what `make fuzz` found, the smallest
## set of inputs that covers as much: the corpus `make test` replays.
fuzz-merge: fuzz-build
	@for t in $(FUZZ_TARGETS); do \
		rm -rf target/fuzz/merged/$$t && mkdir -p target/fuzz/merged/$$t target/fuzz/found/$$t; \
		$(FUZZ_BIN)/$$t -merge=1 target/fuzz/merged/$$t tests/fuzz/corpus/$$t target/fuzz/found/$$t \
			> target/fuzz/$$t.merge.log 2>&1 || { tail -20 target/fuzz/$$t.merge.log; exit 1; }; \
		rm -rf tests/fuzz/corpus/$$t && cp -r target/fuzz/merged/$$t tests/fuzz/corpus/$$t; \
		echo "fuzz $$t: $$(ls tests/fuzz/corpus/$$t | wc -l) inputs in the corpus"; \
	done
