#!/usr/bin/env bash
# ansible-test needs the collection at .../ansible_collections/<namespace>/<name>: copy the
# files git knows about (tracked, or new and not ignored) into .build/ and run sanity there
# on this machine's Python. No ignore files: every finding is fixed at its source.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
py_bin="$root/.venv/bin/python"
dest=.build/ansible_collections/thinkus/ops

# ansible-test downloads a pip bootstrap script from its own file server, which is not
# reachable here; put a stand-in where it caches that download (tools/get_pip_standin.py).
pip_ver=$("$py_bin" -c '
from ansible_test._internal.python_requirements import get_venv_packages
from ansible_test._internal.host_configs import NativePythonConfig
print(get_venv_packages(NativePythonConfig(version="3.11"))["pip"])')
standin="$HOME/.ansible/test/cache/get_pip_${pip_ver//./_}.py"
mkdir -p "$(dirname "$standin")"
cmp -s tools/get_pip_standin.py "$standin" || cp tools/get_pip_standin.py "$standin"

rm -rf "$dest"
mkdir -p "$dest"
git ls-files -co --exclude-standard -z | tar --null -T - -cf - | tar -xf - -C "$dest"
py=$("$py_bin" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
cd "$dest"
# .build/ is ignored by the outer repository and ansible-test lists files through git:
# give the copy a repository of its own so it sees exactly these files.
git init -q . && git add -A
# --requirements lets ansible-test create its per-test virtualenvs (kept under ~/.ansible/test).
"$root/.venv/bin/ansible-test" sanity --python "$py" --requirements --color no "$@"
