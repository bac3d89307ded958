"""The README's "Use" block is a host app that runs as written: served, then moved by the real CLI."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TIMEOUT_S = 60

DRIVER = """
import json, sys
from readme_app import create_app, rollout

app = create_app()
client = app.test_client()
answers = []
for weeks in ([0.4, 0.9, 0.5], [0.4]):
    r = client.post("/api/edges", json={"player": "J. Allen", "line": 1.5, "projection": 1.2, "weeks": weeks})
    answers.append({"status": r.status_code, **r.get_json()})
with app.app_context():
    rollout.flush()
    answers.append({"fallbacks": rollout.metrics("qb_td")["arms"]["v2"]["fallbacks"]})
json.dump(answers, sys.stdout)
"""


def use_block() -> str:
    """The first ```python block under the README's "## Use" heading."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text[text.index("\n## Use\n"):]
    section = section[:section.index("\n## ", 1)]
    found = re.search(r"```python\n(.*?)```", section, re.S)
    assert found, "no python block under ## Use"
    return found.group(1)


def run(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(cwd), "FLASK_APP": "readme_app:create_app"}
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=TIMEOUT_S, check=False)


def test_the_readme_use_block_runs_as_written(tmp_path: Path) -> None:
    (tmp_path / "readme_app.py").write_text(use_block(), encoding="utf-8")
    flask = [sys.executable, "-m", "flask"]

    first = run([sys.executable, "-c", DRIVER], tmp_path)
    assert first.returncode == 0, first.stderr
    assert [(a.get("status"), a.get("calculator_version")) for a in json.loads(first.stdout)[:2]] == [
        (200, "v1"), (200, "v1")]  # a new rollout starts at 0 %
    assert (tmp_path / "instance" / "host.db").is_file()  # the host's own db holds the v2rollout_* tables

    status = run([*flask, "v2rollout", "status"], tmp_path)
    assert status.returncode == 0 and status.stdout.startswith("qb_td: 0% v2"), status.stderr
    moved = run([*flask, "v2rollout", "set-flag", "--flag", "v2_rollout_percentage", "--value", "100",
                 "--reason", "readme test"], tmp_path)
    assert moved.returncode == 0 and "0.0 -> 100.0" in moved.stdout, moved.stderr

    second = run([sys.executable, "-c", DRIVER], tmp_path)
    assert second.returncode == 0, second.stderr
    served, fallback, counted = json.loads(second.stdout)
    assert (served["calculator_version"], served["edge"]) == ("v2", 0.9)  # 1.5 − mean(0.4, 0.9, 0.5)
    assert (fallback["calculator_version"], fallback["edge"]) == ("v1", 0.3)  # one week: Fallback → v1
    assert counted["fallbacks"] == 1
