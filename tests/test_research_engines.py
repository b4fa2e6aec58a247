"""The sweep engines: Ray gives the local pool's rows, and both survive a killed worker.

Each Ray test starts its own local Ray instance (the sweep starts it without --address and stops
it when done), so nothing outside the test is needed.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import threading
import time
from pathlib import Path

import pytest

from qengine.cli import main

EXAMPLES = Path(__file__).parents[1] / "examples"
MODEL = str(EXAMPLES / "digits.tflite")
DATA = str(EXAMPLES / "digits_data.npz")
GRID = {"mode": ["int8", "int16x8"], "granularity": ["per_channel", "per_tensor"],
        "calibrator": ["minmax", "percentile"]}
# AdaRound takes seconds per configuration: long enough to kill a worker in the middle of one
SLOW_GRID = [{"ptq": ["adaround"]}, {"ptq": ["adaround", "bias_correction"]},
             {"ptq": ["cle", "adaround"]}]


def sweep(tmp: Path, grid, *extra: str) -> list[dict]:
    tmp.mkdir(exist_ok=True)
    (tmp / "grid.json").write_text(json.dumps(grid))
    code = main(["sweep", MODEL, "--calibration", DATA, "--calibration-key", "calibration",
                 "--data", DATA, "--data-key", "test_images", "--labels", "test_labels",
                 "--grid", str(tmp / "grid.json"), "-o", str(tmp / "out"),
                 "--json", str(tmp / "rows.json"), *extra])
    assert code == 0
    return json.loads((tmp / "rows.json").read_text())


def without_timing(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in row.items() if k not in ("seconds", "path")} for row in rows]


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def _parent(pid: int) -> int | None:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return None


def _pids() -> list[int]:
    return [int(p) for p in os.listdir("/proc") if p.isdigit()]


def kill_one(find, killed: list, timeout: float = 120.0) -> threading.Thread:
    """In the background: SIGKILL the first process `find()` returns (a worker mid-config)."""

    def run():
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not killed:
            pid = find()
            if pid is not None:
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
                return
            time.sleep(0.2)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


@pytest.mark.slow
@pytest.mark.tf
def test_local_pool_retries_the_configuration_of_a_killed_worker(tmp_path):
    me = os.getpid()
    started = []

    def busy_pool_worker():
        workers = [p for p in _pids() if _parent(p) == me and "spawn_main" in _cmdline(p)]
        if workers and not started:
            started.append(time.monotonic())
        # spawned workers start in ~2 s; AdaRound configurations then run for several seconds.
        # Once the first row is written the other worker is mid-configuration whatever the
        # machine's speed (3 configurations on 2 workers), so a fast run is no reason to miss.
        first_row = any((tmp_path / "out" / "rows").glob("*.json"))
        return workers[0] if workers and (first_row or time.monotonic() - started[0] > 4) \
            else None

    killed: list = []
    thread = kill_one(busy_pool_worker, killed)
    rows = sweep(tmp_path, SLOW_GRID, "--workers", "2")
    thread.join()
    assert killed, "no worker was killed"
    assert [r["config"] for r in rows] == SLOW_GRID
    assert all(r["error"] is None and r["path"] for r in rows)


@pytest.mark.ray
@pytest.mark.tf
def test_ray_rows_equal_the_local_rows(tmp_path):
    local = sweep(tmp_path / "local", GRID, "--workers", "2")
    ray_rows = sweep(tmp_path / "ray", GRID, "--engine", "ray", "--workers", "2")
    assert len(local) == 8
    assert without_timing(ray_rows) == without_timing(local)
    for a, b in zip(local, ray_rows):  # the written files too
        assert Path(a["path"]).read_bytes() == Path(b["path"]).read_bytes()


@pytest.mark.ray
@pytest.mark.tf
@pytest.mark.slow
def test_ray_retries_the_configuration_of_a_killed_worker(tmp_path):
    def busy_ray_worker():
        # Ray names a worker process after the task it is running
        return next((p for p in _pids() if _cmdline(p).startswith("ray::_call_in_worker_ray")),
                    None)

    killed: list = []
    thread = kill_one(busy_ray_worker, killed)
    rows = sweep(tmp_path, SLOW_GRID, "--engine", "ray", "--workers", "2")
    thread.join()
    assert killed, "no worker was killed"
    assert [r["config"] for r in rows] == SLOW_GRID
    assert all(r["error"] is None and r["path"] for r in rows)


@pytest.mark.ray
def test_unreachable_ray_address_is_one_line_error_within_30_s(tmp_path, capsys):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    (tmp_path / "grid.json").write_text(json.dumps({"mode": ["float16"]}))
    start = time.monotonic()
    code = main(["sweep", MODEL, "--data", DATA, "--data-key", "test_images",
                 "--grid", str(tmp_path / "grid.json"), "-o", str(tmp_path / "out"),
                 "--engine", "ray", "--address", f"127.0.0.1:{port}"])
    err = capsys.readouterr().err.strip().splitlines()
    assert time.monotonic() - start < 30
    assert code == 2 and err[-1].startswith("error: cannot reach the Ray cluster at 127.0.0.1:")
    assert not any(line.startswith("error") for line in err[:-1])


@pytest.mark.slow
@pytest.mark.parametrize("engine", ["local", pytest.param("ray", marks=pytest.mark.ray)])
def test_an_error_in_a_worker_is_one_line(tmp_path, capsys, engine):
    """A NaN in the second shard is found by the worker that reads it."""
    import numpy as np

    images = np.load(DATA)["test_images"][:8]
    np.save(tmp_path / "a.npy", images[:4])
    bad = images[4:].copy()
    bad[1, 3, 3] = np.nan
    np.save(tmp_path / "b.npy", bad)
    code = main(["eval", MODEL, "--data", str(tmp_path), "--engine", engine, "--workers", "2",
                 "--quiet"])
    err = [line for line in capsys.readouterr().err.strip().splitlines()
           if line.startswith("error")]
    assert code == 2 and len(err) == 1 and "contains NaN or Inf" in err[0], err
