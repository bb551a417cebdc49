#!/usr/bin/env bash
# Runs a command with USERSVC_TEST_PG naming a database of its own, created
# here and dropped afterwards, so that test runs never collide. Tests give
# themselves a schema each inside it.
#
# Without a reachable PostgreSQL: in CI that is a failure; elsewhere the
# PostgreSQL tests are skipped, and this says so.
set -euo pipefail

admin="${USERSVC_PG_ADMIN:-postgres://root@127.0.0.1:5432/test}"
if ! command -v psql >/dev/null || ! psql "$admin" -Atqc 'SELECT 1' >/dev/null 2>&1; then
    if [ -n "${CI:-}" ]; then
        echo "error: PostgreSQL is not reachable at $admin, and CI requires it" >&2
        exit 1
    fi
    echo "SKIPPED: the PostgreSQL tests: no server at $admin (set USERSVC_PG_ADMIN to point at one)" >&2
    # Tests that need only PostgreSQL have it in their names: filtered out,
    # so they count as skipped, never as passed. Tests across every store
    # run without their PostgreSQL part.
    USERSVC_SKIP_PG=1 "$@" --skip postgres
    status=$?
    echo "SKIPPED: the PostgreSQL tests did not run" >&2
    exit $status
fi

db="usersvc_test_$(date +%s)_$$"
psql "$admin" -qc "CREATE DATABASE $db"
trap 'psql "$admin" -qc "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null 2>&1 || true' EXIT
USERSVC_TEST_PG="${admin%/*}/$db" "$@"
