"""Server-side CPU per decision, in-process: the decision API's ASGI app called directly, no sockets.

    python -m benchmarks.serving_profile [--n 3000] [--problems slot,allocate,rank] [--profile rank]
                                         [--rank-policy ma_rdpg]

Complements benchmarks/serving.py (real uvicorn + load generator): this one
measures only the app (routing, parsing, features, inference, exploration,
logging, metrics, response), with process CPU time, so it is stable on a busy
host and quick to iterate with. Features come from an in-memory reader (the
app's TTL cache answers after the first request per user, as with Feast) and
events go to a producer that counts and drops them; the real producer's per-event cost is on
its own thread and is measured by benchmarks/serving.py. `--profile PROBLEM`
prints the top of a cProfile of that problem's requests.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import json
import os
import pstats
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
REDIS_URL = "redis://127.0.0.1:6379/7"


class MemoryReader:
    """Stored user features for a fixed set of users (the `FeatureReader` protocol)."""

    def __init__(self, users: dict[str, dict[str, Any]]) -> None:
        self.users = users

    def read(self, feature_service: str, user_id: str) -> dict[str, Any]:
        return dict(self.users.get(user_id, {}))

    def ping(self) -> bool:
        return True


async def call(app: Any, path: str, body: bytes) -> tuple[int, bytes]:
    """One POST through the ASGI app; (status, body)."""
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 80),
        "state": {},
    }
    sent = False
    status = 0
    chunks: list[bytes] = []

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        await asyncio.sleep(3600)
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]
        elif message["type"] == "http.response.body":
            chunks.append(message.get("body", b""))

    await app(scope, receive, send)
    return status, b"".join(chunks)


async def run(args: argparse.Namespace) -> None:
    sys.path.insert(0, str(REPO))
    from fastapi import FastAPI

    from models.registry import ModelRegistry
    from serving.app import create_app
    from serving.settings import ServingSettings
    from tests.support.onnx_models import register_policy
    from tests.support.requests import allocate_body, rank_body, slot_body
    from tests.support.serving import NullProducer

    problems = args.problems.split(",")
    bodies = {
        "slot": [json.dumps(slot_body(f"user-{i}", seed=i)).encode() for i in range(64)],
        "allocate": [json.dumps(allocate_body(f"user-{i}", seed=i)).encode() for i in range(64)],
        "rank": [json.dumps(rank_body(f"user-{i}", 200, seed=i)).encode() for i in range(16)],
    }
    if args.rank_policy == "ma_rdpg":  # one session per body: every request reads and writes its message in Redis
        bodies["rank_no_session"] = bodies["rank"]  # the same requests without a session: a zero message, no Redis
        bodies["rank"] = [
            json.dumps({**rank_body(f"user-{i}", 200, seed=i), "session_id": f"session-{i}"}).encode()
            for i in range(16)
        ]
    users = {
        f"user-{i}": {
            "user_activity_group": i % 3,
            "user_recent_rates": [0.5, 0.3, 0.05, 0.01, 0.02, 0.01],
            "user_live_affinity": [0.2, 0.1],
        }
        for i in range(64)
    }
    with tempfile.TemporaryDirectory(prefix="troupe-profile-") as tmp:
        home = Path(tmp)
        registry = ModelRegistry(home / "registry")
        store: dict[str, Any] = {}
        for p in problems:
            if p == "rank" and args.rank_policy == "ma_rdpg":
                from benchmarks.serving import _register_ma_rdpg

                _register_ma_rdpg(registry, home / "ma_rdpg")
                store = {"state_store_url": REDIS_URL, "state_store_prefix": f"profile-ma-rdpg-{os.getpid()}"}
            else:
                register_policy(registry, p, "v1", promote=True)
        settings = ServingSettings(home=home, problems=problems, registry_watch_s=0, ort_cuda="never", **store)
        app = create_app(settings, producer=NullProducer(), feature_reader=MemoryReader(users))
        const = FastAPI()

        @const.post("/v1/decide/{problem}")
        async def constant(problem: str) -> dict[str, object]:
            return {"action": [0.0], "propensity": 1.0, "fallback": False}

        async with app.router.lifespan_context(app):
            targets = [("constant", const, "slot")] + [(p, app, p) for p in problems]
            if args.rank_policy == "ma_rdpg" and "rank" in problems:  # what the session message store costs
                targets.append(("rank_no_session", app, "rank"))
            for _name, target, body_of in targets:  # warm-up: caches, first-call costs
                for i in range(200):
                    status, out = await call(
                        target, f"/v1/decide/{body_of}", bodies.get(_name, bodies[body_of])[i % 16]
                    )
                    assert status == 200, out[:500]
            # Rounds interleave the targets; the minimum per target is the least disturbed by the host.
            best: dict[str, float] = {}
            for _ in range(args.rounds):
                for name, target, body_of in targets:
                    path = f"/v1/decide/{body_of}"
                    reqs = bodies.get(name, bodies[body_of])
                    n = args.n if body_of != "rank" else max(1, args.n // 5)
                    c0 = time.process_time()
                    for i in range(n):
                        await call(target, path, reqs[i % len(reqs)])
                    best[name] = min(best.get(name, float("inf")), (time.process_time() - c0) / n * 1e6)
            for name, cpu_us in best.items():
                print(f"{name:9s} cpu {cpu_us:7.1f} µs/request (min of {args.rounds} rounds)", flush=True)
            if args.profile is not None:
                name, target, body_of = next(t for t in targets if t[0] == args.profile)
                prof = cProfile.Profile()
                prof.enable()
                for i in range(args.n // (5 if body_of == "rank" else 1)):
                    await call(target, f"/v1/decide/{body_of}", bodies.get(name, bodies[body_of])[i % 16])
                prof.disable()
                pstats.Stats(prof).sort_stats(args.sort).print_stats(args.top)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=3000, help="requests per problem (rank: n / 5)")
    ap.add_argument("--problems", default="slot,allocate,rank")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds; the minimum is reported")
    ap.add_argument("--profile", default=None, help="cProfile this target (constant, slot, allocate or rank)")
    ap.add_argument("--sort", default="tottime", help="pstats sort key")
    ap.add_argument("--top", type=int, default=40)
    ap.add_argument(
        "--rank-policy",
        choices=("gaussian", "ma_rdpg"),
        default="gaussian",
        help="ma_rdpg: rank served by MA-RDPG stage models, the session message in Redis (" + REDIS_URL + ")",
    )
    args = ap.parse_args(argv)
    try:
        import uvloop

        uvloop.run(run(args))
    except ImportError:
        asyncio.run(run(args))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
