"""`qengine warmup` and the one-line notice printed when a kernel compiles (issue #14)."""

from __future__ import annotations

import numba
import numpy as np
from qengine.kernels.jit import on_first_compile

from qengine.cli import main
from qengine.warmup import builtin_model, compile_notice


def test_warmup_runs_the_builtin_network_in_every_mode(capsys):
    assert main(["warmup", "--threads", "1"]) == 0
    out = capsys.readouterr().out
    for mode in ("float", "float16", "int8", "dynamic", "16x8"):
        assert f"{mode}: ready" in out
    assert "kernels cached in" in out


def test_warmup_of_a_model_file(tmp_path, capsys):
    path = tmp_path / "net.tflite"
    builtin_model().save(str(path))
    assert main(["warmup", str(path), "--threads", "1", "2"]) == 0
    assert f"{path}: ready" in capsys.readouterr().out


def test_warmup_of_a_missing_file_is_one_error_line(tmp_path, capsys):
    assert main(["warmup", str(tmp_path / "missing.tflite")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and len(err.strip().splitlines()) == 1


def test_first_compile_calls_back_once():
    calls = []
    on_first_compile(lambda: calls.append(1))

    @numba.njit(cache=False)
    def fresh_a(x):  # not in any cache: compiling it fires the event
        return x + 1

    @numba.njit(cache=False)
    def fresh_b(x):
        return x * 2

    assert fresh_a(np.int64(1)) == 2 and fresh_b(np.int64(2)) == 4
    assert calls == [1]


def test_compile_notice_estimates_by_model_kind_and_cores():
    model = builtin_model()
    assert compile_notice(model, cores=2).endswith("float kernels for this CPU, once (qengine "
                                                   "warmup does it ahead): ~10 s")
    assert compile_notice(model, cores=1).endswith("~15 s")
    weights = next(t for t in model.main.tensors if t.is_constant)
    weights.dtype = "int8"  # int8 weights, float activations
    assert "dynamic range kernels" in compile_notice(model, cores=2)
    next(t for t in model.main.tensors if not t.is_constant).dtype = "int8"
    assert "integer kernels" in compile_notice(model, cores=2)
    assert compile_notice(model, cores=2).endswith("~5 s")


def test_warmup_with_two_threads_compiles_the_split_drivers(tmp_path):
    """The built-in network's layers are too small to split: warmup splits them anyway, so the
    2-thread drivers are in the cache before a real model needs them (a fresh process has no
    compiled signature until a call loads or compiles one)."""
    import subprocess
    import sys

    path = tmp_path / "net.tflite"
    builtin_model().save(str(path))
    code = ("import sys; from qengine.cli import main; from qengine.kernels import float_gemm; "
            f"main(['warmup', {str(path)!r}, '--threads', '2']); "
            "print(len(float_gemm.conv2d_f32_split.signatures))")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=600, check=True)
    assert run.stdout.split()[-1] == "1"


def test_warmup_compiles_the_hybrid_conv_kernels():
    """The built-in network's dynamic-range variant has hybrid CONV_2D and DEPTHWISE_CONV_2D
    (its filters are large enough to be quantized), so a warmed cache holds their fused
    kernels before a published dynamic-range model needs them."""
    import subprocess
    import sys

    code = ("from qengine.cli import main; from qengine.kernels import hybrid_conv as h; "
            "main(['warmup', '--threads', '1']); "
            "print(len(h.run_hybrid_conv_serial.signatures), "
            "len(h.run_hybrid_depthwise_serial.signatures))")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=900, check=True)
    assert run.stdout.split()[-2:] == ["1", "1"]
