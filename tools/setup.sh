#!/usr/bin/env bash
# make setup: the virtualenv with the pinned Python dependencies, and the link that lets
# playbooks in this checkout resolve thinkus.ops.* to the working tree. Idempotent and
# fast when nothing changed (a stamp holds the hash of requirements.txt).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

die() { echo "setup: $*" >&2; exit 1; }

command -v python3 >/dev/null 2>&1 || die "python3 is missing: install Python 3.11 (apt-get install python3)"
python3 - <<'PY' || die "Python 3.10 or newer is required (found $(python3 -V 2>&1))"
import sys
sys.exit(0 if sys.version_info >= (3, 10) else 1)
PY
python3 -c 'import venv, ensurepip' 2>/dev/null \
  || die "the Python venv module is missing: apt-get install python3-venv"
command -v git >/dev/null 2>&1 || die "git is missing: apt-get install git"
# The local Kubernetes control plane, etcd, kwok and actionlint are built from Go modules.
command -v go >/dev/null 2>&1 || die "go is missing: install Go 1.26 or newer (the k8s.io/kubernetes v1.37 build needs it)"
go_minor=$(go env GOVERSION | sed -E 's/^go1\.([0-9]+).*/\1/')
[ "${go_minor:-0}" -ge 26 ] 2>/dev/null || die "Go 1.26 or newer is required (found $(go env GOVERSION))"

# System packages (Docker engine, PostgreSQL, Redis, etcd, Prometheus, ...): the missing ones.
tools/system_packages.sh

want=$(sha256sum requirements.txt | cut -d' ' -f1)
stamp=.venv/.thinkus-requirements
if [ ! -x .venv/bin/python ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "setup: installing Python dependencies into .venv (requirements.txt)"
  [ -x .venv/bin/python ] || python3 -m venv .venv
  .venv/bin/python -m pip install --quiet --upgrade pip
  .venv/bin/python -m pip install --quiet -r requirements.txt
  echo "$want" > "$stamp"
else
  echo "setup: .venv is up to date"
fi

# Go-built tools (actionlint) into the cache, linked into .venv/bin.
tools/go_tools.sh

# thinkus.ops resolves to this working tree (no installed copy to go stale).
mkdir -p .collections/ansible_collections/thinkus
link=.collections/ansible_collections/thinkus/ops
if [ "$(readlink "$link" 2>/dev/null)" != "$root" ]; then
  rm -rf "$link"
  ln -s "$root" "$link"
fi
# The collection's Python compiled once, as pip compiles an installed package: Ansible imports
# these files in every run, and where the environment turns off writing the bytecode cache
# (PYTHONDONTWRITEBYTECODE) it would compile them again each time. A source edited later is
# compiled from the source again, as Python does with any stale cache (mtime check).
.venv/bin/python -m compileall -q plugins \
  || echo "setup: some files in plugins/ did not compile (above); make lint and the tests name them too"
# The installed version from the package metadata: `ansible --version` starts all of Ansible (0.3 s of every make demo).
echo "setup: ok (ansible-core $(.venv/bin/python -c 'import importlib.metadata as m; print(m.version("ansible-core"))'))"
