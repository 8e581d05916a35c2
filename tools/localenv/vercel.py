"""A local Vercel API for `make demo`: the test server of tests/support/vercel_api.py,
serving the documented endpoints on loopback with a generated token and one project.

Vercel is the one external SaaS; the deploy pipeline talks to this stand-in in the local
environment exactly as it talks to the real API elsewhere (api_url and token differ).
"""

from __future__ import annotations

import signal
import sys
import threading

from . import _secrets
from ._proc import ROOT, Context, http_status, spawn, stop, wait_for

NAME = "vercel-api"
HOST = "127.0.0.1"
PORT = 19300
PROJECT = "thinkus-app"


def url() -> str:
    return f"http://{HOST}:{PORT}"


def _answers() -> bool:
    return http_status(f"{url()}/v9/projects/{PROJECT}") in (200, 401, 403)


def up(ctx: Context) -> dict[str, str]:
    _secrets.get(ctx, "vercel_token")
    spawn(
        ctx,
        NAME,
        [sys.executable, "-m", "tools.localenv.vercel", "serve"],
        cwd=ROOT,
        env={"THINKUS_LOCAL_DIR": str(ctx.state_dir)},
        ports=[PORT],
    )
    wait_for(ctx, NAME, _answers, timeout=30)
    return {"vercel_api_url": url(), "vercel_project": PROJECT}


def status(ctx: Context) -> tuple[bool, str]:
    return _answers(), f"{url()} project {PROJECT}"


def down(ctx: Context) -> None:
    stop(ctx, NAME)


def serve() -> None:
    """Run the stand-in in the foreground (what `up` spawns); the token comes from .local."""
    sys.path.insert(0, str(ROOT))
    from tests.support.vercel_api import VercelAPIServer

    token = _secrets.load(Context())["vercel_token"]
    server = VercelAPIServer(token=token, host=HOST, port=PORT)
    server.add_project(PROJECT)
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    with server:
        print(f"vercel-api: serving {url()} (project {PROJECT})", flush=True)
        done.wait()


if __name__ == "__main__" and sys.argv[1:] == ["serve"]:
    serve()
