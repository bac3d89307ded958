"""Shadow mode under a real gunicorn with --preload: every worker runs its own shadow threads."""
from __future__ import annotations

import json
from pathlib import Path

from .support import drive


def test_preloaded_workers_each_run_shadow_comparisons(gunicorn_server, tmp_path: Path) -> None:
    stats_dir = tmp_path / "stats"
    stats_dir.mkdir()
    server = gunicorn_server(
        "tests.e2e.shadow_app:app", workers=2, preload=True,
        env={"INSTANCE_DIR": str(tmp_path / "instance"), "STATS_DIR": str(stats_dir)},
    )
    workers = set(server.worker_pids())
    assert len(workers) == 2
    n = 400
    responses = drive(server.url, [("GET", f"/calc/{i}", None, None) for i in range(n)], concurrency=8)
    assert all(status == 200 and body["version"] == "v1" for status, body in responses)
    served_by = {body["pid"] for _, body in responses}
    assert served_by == workers, "both workers must have served requests"
    assert server.stop() == 0
    dumps = {int(p.stem.split("-")[1]): json.loads(p.read_text()) for p in stats_dir.glob("stats-*.json")}
    assert set(dumps) == workers
    per_worker = {pid: sum(d["v2"]["shadow"].values()) for pid, d in dumps.items()}
    assert all(count > 0 for count in per_worker.values()), per_worker
    assert sum(per_worker.values()) == n
    assert all(d["v2"]["shadow"].keys() == {"EXACT"} for d in dumps.values())
    assert sum(d["v1"]["calculations"][""] for d in dumps.values()) == n
