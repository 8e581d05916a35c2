#!/usr/bin/env bash
# Go tools the suite uses, built from the Go module proxy into the persistent cache and
# linked into .venv/bin: actionlint (GitHub workflow linter; its PyPI wrapper downloads
# a release binary, which our machines cannot).
set -euo pipefail
cd "$(dirname "$0")/.."
cache=${THINKUS_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/thinkus-ops}
actionlint_version=v1.7.12
bin="$cache/bin"
if ! "$bin/actionlint" --version 2>/dev/null | grep -qx "${actionlint_version}"; then
  command -v go >/dev/null 2>&1 || { echo "setup: go is missing (needed to build actionlint): install Go 1.22+" >&2; exit 1; }
  echo "setup: building actionlint ${actionlint_version} (Go module proxy)"
  GOBIN="$bin" GOMODCACHE="$cache/go/mod" GOCACHE="$cache/go/build" GOFLAGS=-modcacherw \
    go install "github.com/rhysd/actionlint/cmd/actionlint@${actionlint_version}"
fi
ln -sf "$bin/actionlint" .venv/bin/actionlint
