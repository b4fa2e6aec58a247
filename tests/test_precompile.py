"""runtime/precompile.py: a cold model compiled on every core by helper processes.

The unit tests check the pieces (kinds, claims, made-up inputs, helpers that are not needed);
the slow ones run the helper and `qengine run` in fresh processes on an empty kernel cache
and check that the kernels land in the cache and that nothing else changes.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from qengine.kernels.threads import CORES

from qengine import Interpreter
from qengine.builder import GraphBuilder, options
from qengine.ir import numpy_dtype
from qengine.runtime import precompile
from qengine.warmup import builtin_model

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "digits.tflite"


def _plan(model):
    return Interpreter(model)._plan(0, fused=True)


def _mixed_model():
    """CONV_2D, ADD, CONV_2D, LOGISTIC and a RANDOM_UNIFORM (stateful: never run early)."""
    b = GraphBuilder()
    x = b.input("x", (1, 8, 8, 4))
    conv = options("Conv2DOptions", padding=1, strideH=1, strideW=1)
    w = b.const("w", np.ones((4, 1, 1, 4), np.float32))
    bias = b.const("b", np.zeros(4, np.float32))
    a = b.op("CONV_2D", [x, w, bias], (1, 8, 8, 4), options=conv)
    s = b.op("ADD", [a, a], (1, 8, 8, 4), options=options("AddOptions"))  # (no residual to fold)
    c = b.op("CONV_2D", [s, w, bias], (1, 8, 8, 4), options=conv)
    y = b.op("LOGISTIC", [c], (1, 8, 8, 4))
    noise = b.op("RANDOM_UNIFORM", [b.const("shape", np.array([2], np.int32))], (2,), "float32",
                 options=options("RandomOptions", seed=1, seed2=2))
    return b.build([y, noise])


def test_kinds_group_ops_by_type_in_first_seen_order_without_stateful_ops():
    assert precompile.op_kinds(_plan(_mixed_model())) == [[0, 2], [1], [3]]


def test_windowed_kinds_come_first():
    """LOGISTIC, then a MAX_POOL_2D: the pool's kind (the heavier compile) is claimed first."""
    b = GraphBuilder()
    y = b.op("LOGISTIC", [b.input("x", (1, 8, 8, 4))], (1, 8, 8, 4))
    y = b.op("MAX_POOL_2D", [y], (1, 4, 4, 4),
             options=options("Pool2DOptions", padding=1, strideH=2, strideW=2, filterHeight=2,
                             filterWidth=2))
    y = b.op("LOGISTIC", [y], (1, 4, 4, 4))
    assert precompile.op_kinds(_plan(b.build([y]))) == [[1], [0, 2]]


def test_made_up_inputs_have_each_tensors_dtype_and_prepared_shape():
    plan = _plan(builtin_model())
    shapes = precompile._slot_shapes(plan)
    for indices in precompile.op_kinds(plan):
        for index in indices:
            arrays = precompile.made_up_inputs(plan, index, shapes)
            for slot, value in zip(plan.in_slots[index], arrays):
                if slot < 0:
                    assert value is None
                    continue
                tensor = plan.tensors[slot]
                assert value.dtype == numpy_dtype(tensor.dtype), tensor.name
                if slot not in plan.constants and slot not in plan.folded:
                    assert value.shape == tuple(tensor.shape), tensor.name


def test_take_kinds_runs_exactly_the_unclaimed_kinds(tmp_path):
    plan = _plan(_mixed_model())
    ran = []
    for index, step in enumerate(plan.steps):
        if step.prepared is not None:
            original = step.prepared.run
            step.prepared.run = lambda *a, _i=index, _run=original: (ran.append(_i), _run(*a))
    (tmp_path / "1").write_text("999999")  # ADD, claimed by another process
    precompile.take_kinds(plan, precompile.op_kinds(plan), tmp_path, threads=1)
    assert ran == [0, 2, 3]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["0", "0.done", "1", "2", "2.done"]
    assert (tmp_path / "0").read_text() == str(os.getpid())
    assert precompile._unfinished_claims(tmp_path) == {999999}


def test_a_marked_model_or_helpers_off_start_no_helper(tmp_path, monkeypatch):
    model = tmp_path / "m.tflite"
    _mixed_model().save(model)
    monkeypatch.setenv("QENGINE_COMPILE_HELPERS", "0")
    with precompile.compiling_on_all_cores(model, 1, "ref") as first:
        assert first.helpers == [] and first.claims is None
    monkeypatch.setenv("QENGINE_COMPILE_HELPERS", "1")
    monkeypatch.setattr(precompile, "_marker", lambda *a: tmp_path)  # exists: compiled
    with precompile.compiling_on_all_cores(model, 1, "ref") as first:
        assert first.helpers == [] and first.claims is None


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs named pipes")
def test_a_model_read_from_a_pipe_starts_no_helper_and_is_not_read_again(tmp_path, monkeypatch):
    pipe = tmp_path / "model.pipe"
    os.mkfifo(pipe)  # reading it would block: nobody writes
    monkeypatch.setenv("QENGINE_COMPILE_HELPERS", "1")
    with precompile.compiling_on_all_cores(pipe, 1, "ref") as first:
        assert first.helpers == [] and first.claims is None


def test_an_unwritable_kernel_cache_starts_no_helper(tmp_path, monkeypatch):
    model = tmp_path / "m.tflite"
    _mixed_model().save(model)
    monkeypatch.setenv("QENGINE_COMPILE_HELPERS", "1")
    monkeypatch.setattr(precompile.os, "access", lambda path, mode: False)  # (root passes chmod)
    with precompile.compiling_on_all_cores(model, 1, "ref") as first:
        assert first.helpers == [] and first.claims is None and first.marker is None


def test_no_writable_temporary_directory_compiles_here_alone(tmp_path, monkeypatch):
    model = tmp_path / "m.tflite"
    _mixed_model().save(model)
    monkeypatch.setenv("QENGINE_COMPILE_HELPERS", "1")
    monkeypatch.setattr(precompile, "_marker", lambda *a: tmp_path / "marker")
    monkeypatch.setattr(precompile.tempfile, "tempdir", str(tmp_path / "missing"))
    with precompile.compiling_on_all_cores(model, 1, "ref") as first:
        assert first.helpers == [] and first.claims is None
        first.take(Interpreter(str(model)))


@pytest.mark.skipif(CORES < 2, reason="helpers start only with a second core")
def test_a_helper_that_claimed_nothing_is_stopped_not_awaited(tmp_path, monkeypatch):
    model = tmp_path / "m.tflite"
    _mixed_model().save(model)
    monkeypatch.setenv("QENGINE_COMPILE_HELPERS", "1")
    monkeypatch.setattr(precompile, "_marker", lambda *a: tmp_path / "marker")
    real_popen = subprocess.Popen
    # a helper still starting up: it would claim nothing for a minute
    monkeypatch.setattr(precompile.subprocess, "Popen", lambda command, **kw: real_popen(
        [sys.executable, "-c", "import time; time.sleep(60)"], **kw))
    start = time.monotonic()
    with precompile.compiling_on_all_cores(model, 1, "ref") as first:
        helpers, claims = list(first.helpers), first.claims
        assert helpers
        first.take(Interpreter(str(model)))
    assert time.monotonic() - start < 30
    assert all(h.poll() is not None for h in helpers)
    assert not claims.exists() and (tmp_path / "marker").exists()


@pytest.mark.skipif(CORES < 2, reason="helpers start only with a second core")
def test_a_model_that_fails_to_prepare_stops_the_helpers(tmp_path, monkeypatch):
    b = GraphBuilder()
    y = b.op("Landmarks", [b.input("x", (2,))], (2,), custom_code="Landmarks")
    model = tmp_path / "custom.tflite"
    b.build([y]).save(model)
    monkeypatch.setenv("QENGINE_COMPILE_HELPERS", "1")
    monkeypatch.setattr(precompile, "_marker", lambda *a: tmp_path / "marker")
    with pytest.raises(Exception, match="Landmarks"), \
            precompile.compiling_on_all_cores(model, 1, "ref") as first:
        helpers, claims = list(first.helpers), first.claims
        Interpreter(str(model))
    assert helpers and all(h.poll() is not None for h in helpers)
    assert not claims.exists() and not (tmp_path / "marker").exists()


# --- whole processes on an empty kernel cache ------------------------------------------------

_COUNT_COMPILES = """
import sys, numpy as np, numba.core.event as event
import qengine
from qengine.cli_common import generated_inputs
compiled = []
class Count(event.Listener):
    def on_start(self, e): compiled.append(1)
    def on_end(self, e): pass
event.register("numba:compile", Count())
it = qengine.Interpreter(sys.argv[1])
it.run(generated_inputs(it.inputs, 0, quiet=True))
print(len(compiled))
"""


def _env(tmp_path, helpers: str) -> dict:
    return {**os.environ, "QENGINE_CACHE_DIR": str(tmp_path / "cache"),
            "QENGINE_COMPILE_HELPERS": helpers, "TMPDIR": str(tmp_path / "tmp")}


def _int8_example(tmp_path) -> Path:
    from qengine import load
    from qengine.quantizer import quantize

    model = load(EXAMPLE)
    rng = np.random.default_rng(0)
    calibration = [[rng.random(t.shape, dtype=np.float32) for t in model.main.inputs]
                   for _ in range(4)]
    path = tmp_path / "digits.int8.tflite"
    quantize(model, "int8", calibration, quiet=True).save(path)
    (tmp_path / "tmp").mkdir()
    return path


@pytest.mark.slow
def test_the_helper_alone_compiles_every_kernel_the_run_needs(tmp_path):
    model = _int8_example(tmp_path)
    claims = tmp_path / "claims"
    claims.mkdir()
    env = _env(tmp_path, "0")
    helper = subprocess.run([sys.executable, "-m", "qengine.runtime.precompile", str(model),
                             str(claims), "1", "ref"], check=False, env=env,
                            capture_output=True, text=True)
    assert helper.returncode == 0, helper.stderr
    kinds = precompile.op_kinds(_plan(str(model)))
    assert sorted(p.name for p in claims.iterdir()) == sorted(
        [str(k) for k in range(len(kinds))] + [f"{k}.done" for k in range(len(kinds))])
    counted = subprocess.run([sys.executable, "-c", _COUNT_COMPILES, str(model)], check=False,
                             env=env, capture_output=True, text=True)
    assert counted.returncode == 0, counted.stderr
    assert counted.stdout.strip() == "0"  # every kernel came from the helper's cache


@pytest.mark.slow
@pytest.mark.skipif(CORES < 2, reason="helpers start only with a second core")
def test_cold_run_with_helpers_gives_the_same_outputs_and_leaves_nothing(tmp_path):
    model = _int8_example(tmp_path)
    outputs = {}
    for helpers in ("1", "0"):
        out = tmp_path / f"out{helpers}.npz"
        env = _env(tmp_path / helpers, helpers)
        (tmp_path / helpers / "tmp").mkdir(parents=True)
        run = subprocess.run([sys.executable, "-m", "qengine", "run", str(model), "--repeat",
                              "1", "--output", str(out)], check=False, env=env,
                             capture_output=True, text=True)
        assert run.returncode == 0, run.stderr
        assert list((tmp_path / helpers / "tmp").iterdir()) == []  # no claims left behind
        outputs[helpers] = dict(np.load(out))
        markers = list((tmp_path / helpers / "cache").rglob("compiled-models/*"))
        assert len(markers) == (1 if helpers == "1" else 0)
    assert outputs["1"].keys() == outputs["0"].keys()
    for name, value in outputs["0"].items():
        np.testing.assert_array_equal(outputs["1"][name], value)
