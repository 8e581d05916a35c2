"""Stand-in for the pip bootstrap script that ansible-test downloads.

ansible-test creates an empty virtualenv for each sanity test and fetches a pinned
``get-pip.py`` from its own file server to put pip into it. Only the package registries
are reachable from our machines, so tools/sanity.sh places this script where ansible-test
caches that download. It does the same job from what the interpreter already has: pip's
bundled wheel (ensurepip), then ``pip install`` of the requested pins from the package index.
"""

from __future__ import annotations

import ensurepip
import os
import runpy
import sys

# get-pip.py options that are not pip options.
_GET_PIP_ONLY = {"--no-setuptools", "--no-wheel"}


def main() -> None:
    args = [a for a in sys.argv[1:] if a not in _GET_PIP_ONLY]
    saved = dict(os.environ)
    ensurepip.bootstrap(upgrade=True, default_pip=False)
    # ensurepip points PIP_CONFIG_FILE at /dev/null for its own run; the real install must
    # see the machine's pip configuration (index, certificates) again.
    os.environ.clear()
    os.environ.update(saved)
    sys.argv = ["pip", "install", *args]
    runpy.run_module("pip", run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
