# usersvc: `make run` starts the server, `make test` runs every test.
# Nothing here needs protoc: the crate builds with plain cargo.

CARGO ?= cargo

.PHONY: run build test lint check-no-codegen unit

## Start the server on 127.0.0.1:50051 with the embedded default store.
run:
	$(CARGO) run --release -- serve

build:
	$(CARGO) build --release

## Every test: the design-card checks, formatting and lints, then cargo test.
test: check-no-codegen lint unit

unit:
	$(CARGO) test

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --all-targets -- -D warnings

## The design card: no build script, and no code generator in any part of
## the dependency tree (normal, build or dev).
check-no-codegen:
	@if [ -e build.rs ]; then echo "error: build.rs exists; usersvc has no build script"; exit 1; fi
	@if $(CARGO) tree --edges all --prefix none | grep -E '^(prost-build|tonic-build|tonic-prost-build|protobuf-src) '; then \
		echo "error: a code generator is in the dependency tree (above)"; exit 1; \
	fi
	@echo "no build.rs, no code generator in the dependency tree"
