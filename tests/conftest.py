"""Shared pytest setup: test helper imports, the `tf` marker's skip, the corpus fixture."""

from __future__ import annotations

import importlib.util
import os
import pathlib
import sys

import pytest

# With --import-mode=importlib, tests/ is not put on sys.path; the test modules
# import the helpers here (tflite_ref, corpus) as top-level modules.
_TESTS_DIR = str(pathlib.Path(__file__).resolve().parent)
if _TESTS_DIR not in sys.path:
    sys.path.insert(0, _TESTS_DIR)

_TF_MODULES = ("tensorflow", "ai_edge_litert")

# `qengine run` compiles a cold model on every core with helper processes (runtime/
# precompile.py): under pytest -n 2 both cores run tests already, so only the tests of that
# code (tests/test_precompile.py) turn it on.
os.environ.setdefault("QENGINE_COMPILE_HELPERS", "0")


def _missing_tf_modules() -> list[str]:
    # find_spec only locates the package; importing TensorFlow would cost seconds.
    return [name for name in _TF_MODULES if importlib.util.find_spec(name) is None]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if importlib.util.find_spec("ray") is None:
        skip_ray = pytest.mark.skip(reason="needs ray (pip install 'qengine[ray]')")
        for item in items:
            if "ray" in item.keywords:
                item.add_marker(skip_ray)
    missing = _missing_tf_modules()
    if not missing:
        return
    skip = pytest.mark.skip(reason=f"needs {' and '.join(missing)} (not importable)")
    for item in items:
        if "tf" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def corpus():
    """The test-model corpus module (models are built lazily and cached on disk)."""
    import corpus as corpus_module

    return corpus_module


@pytest.fixture(params=[1, 2], ids=["1thread", "2threads"])
def threads(request):
    """Run the test with Numba kernels on 1, then 2 threads (fast kernels must not depend on it)."""
    import numba

    before = numba.get_num_threads()
    numba.set_num_threads(min(request.param, numba.config.NUMBA_NUM_THREADS))
    yield request.param
    numba.set_num_threads(before)


# CI runs hypothesis with a fixed seed: a failure there must be reproducible, and new
# examples are explored in local runs (which keep their failures in .hypothesis/).
if os.environ.get("CI"):
    from hypothesis import settings

    settings.register_profile("ci", derandomize=True, database=None)
    settings.load_profile("ci")


# The kernel tests' cases are small: below the Python pool's production bar for splitting
# work (threads.MIN_PARALLEL_FLOPS, tuned to this VM's hand-off cost; the float BLAS path),
# their 2-thread cases would run on one thread and test nothing. The bar the kernels were first
# written against (4M flops) makes them take the split paths. The compiled splits' own bar
# (MIN_SPLIT_FLOPS, 1M) is below the tests' cases already.
TEST_MIN_PARALLEL_FLOPS = 4_000_000


@pytest.fixture(autouse=True)
def _split_small_test_cases(monkeypatch):
    from qengine.kernels import threads

    monkeypatch.setattr(threads, "MIN_PARALLEL_FLOPS", TEST_MIN_PARALLEL_FLOPS)
    # Helpers go only to cores no other process keeps busy; under `pytest -n 2` the other
    # worker does, and the 2-thread cases would run on one thread and test nothing.
    monkeypatch.setattr(threads._OtherProcesses, "enabled", False)
