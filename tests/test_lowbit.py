"""Low-bit formats without TensorFlow: packing against a bit-by-bit twin, lossless round trips,
the validation rules, and the low-bit kernels against slow NumPy twins."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from lowbit_models import BLOCK, mixed_model
from qengine.kernels import hybrid
from qengine.kernels.lowbit import blockwise_hybrid_fc, lookup_rows

import qengine
from qengine import lowbit
from qengine.builder import SAME, GraphBuilder, options
from qengine.flatbuffer_io import _Writer
from qengine.ir import Quantization, diff

# -- packing -----------------------------------------------------------------------------------


def pack_twin(values, dtype: str) -> bytes:
    """The file layout value by value: value i goes to bits [i%k*bits, ...) of byte i//k."""
    bits = lowbit.BITS[dtype]
    per_byte = 8 // bits
    out = bytearray(-(-len(values) // per_byte))
    for i, v in enumerate(values):
        out[i // per_byte] |= (int(v) & ((1 << bits) - 1)) << (bits * (i % per_byte))
    return bytes(out)


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(sorted(lowbit.BITS)), st.data())
def test_pack_matches_the_layout_and_unpack_inverts_it(dtype, data):
    low, high = lowbit.RANGES[dtype]
    values = data.draw(st.lists(st.integers(low, high), max_size=40))
    packed = lowbit.pack(np.array(values, np.int64), dtype)
    assert packed == pack_twin(values, dtype)
    unpacked = lowbit.unpack(packed, dtype, len(values))
    assert unpacked.dtype == lowbit.unpacked_dtype(dtype)
    assert unpacked.tolist() == values


def test_pack_refuses_values_out_of_range():
    with pytest.raises(qengine.InvalidModelError, match=r"int4 values must lie in \[-8, 7\]"):
        lowbit.pack(np.array([3, 8]), "int4")


def test_tensor_data_is_unpacked_and_assigning_packs():
    model = mixed_model()
    table = model.main.tensor("table")
    assert table.data.shape == (5, 33) and table.data.dtype == np.int8
    assert len(table.buffer) == (5 * 33 + 3) // 4  # four int2 a byte, the tail padded
    assert not table.data.flags.writeable
    before = table.buffer.data
    table.data = table.data.copy()
    assert table.buffer.data == before


# -- round trip --------------------------------------------------------------------------------


def test_low_bit_model_round_trips_byte_for_byte():
    model = mixed_model()
    data = model.to_bytes()
    again = qengine.load(data)
    assert diff(model, again) == []
    assert again.to_bytes() == data
    block = again.main.tensor("w2").quantization.blockwise
    assert block.scales is again.main.tensor("w2_scales") and block.block_size == BLOCK


def test_pruning_keeps_block_scales():
    model = qengine.load(mixed_model().to_bytes())
    model.main.prune()
    assert any(t.name == "w2_scales" for t in model.main.tensors)


def test_low_bit_model_runs_close_to_its_float_equivalent():
    """The hybrid arithmetic quantizes activations to 8 bits; against float math on the
    dequantized weights the error stays within 2% of the output range (measured 0.6%)."""
    model = mixed_model()
    ids = np.array([4, 0, 2], np.int32)
    (got,) = qengine.Interpreter(model).run(ids).values()
    g = model.main.tensor
    # TFLite reads an int2 row from the first value of the byte holding its start (row 2 of
    # 33 values starts at value 66, read from value 64)
    flat = g("table").data.reshape(-1)
    starts = ids * 33 // 4 * 4
    rows = np.stack([flat[s:s + 33] for s in starts]) * g("table").quantization.scale[ids, None]
    hidden = np.maximum(rows @ (g("w1").data * g("w1").quantization.scale[:, None]).T, 0)
    w2 = lowbit.dequantize_blockwise(g("w2").data, g("w2_scales").data, None, BLOCK)
    offset = 0.05 * (g("offset").data.astype(np.float64) - 8)
    want = hidden @ w2.T + offset
    assert np.abs(got - want).max() <= 0.02 * np.ptp(want)


def test_inspect_lists_bits_granularity_and_block_size():
    from qengine.inspect import describe, format_text

    info = describe(mixed_model())
    rows = {w["name"]: w for w in info["weights"]}
    assert rows["table"] == {"name": "table", "op": "EMBEDDING_LOOKUP", "shape": [5, 33],
                                  "dtype": "int2", "bits": 2, "bytes": 42,
                                  "granularity": "per-channel", "axis": 0}
    assert (rows["w2"]["bits"], rows["w2"]["granularity"], rows["w2"]["block_size"]) == \
        (4, "blockwise", BLOCK)
    assert (rows["offset"]["dtype"], rows["offset"]["granularity"]) == ("uint4", "per-tensor")
    assert "w2  (8, 64) int4, blockwise, block size 32, 256 bytes  (FULLY_CONNECTED)" in \
        format_text(info)


# -- validation --------------------------------------------------------------------------------


def unverified_bytes(model) -> bytes:
    """Serialize without the writer's verify, as a corrupt file from elsewhere would be."""
    return _Writer(model).build(external=False)


def _block(model):
    return model.main.tensor("w2").quantization.blockwise


def _short_buffer(model):
    t = model.main.tensor("w1")
    t.buffer = type(t.buffer)(t.buffer.data[:-1])


def _block_size(model):
    _block(model).block_size = 24


def _scales_shape(model):
    s = _block(model).scales
    s.data = np.ones((8, 3), np.float16)


def _scales_dtype(model):
    s = _block(model).scales
    s.dtype = "int32"
    s.data = np.ones((8, 2), np.int32)


def _on_activation(model):
    hidden = model.main.operators[1].outputs[0]
    hidden.quantization = Quantization(np.zeros(0), np.zeros(0), details=_block(model))


@pytest.mark.parametrize("mutate,message", [
    (_short_buffer, (r"constant 'w1' of shape \(64, 33\) int4 needs 1056 bytes but its buffer "
                     r"has 1055")),
    (_block_size, r"blockwise tensor 'w2': block size 24 does not divide the depth 64"),
    (_scales_shape, (r"blockwise tensor 'w2': its scales tensor 'w2_scales' has shape "
                     r"\(8, 3\); expected \(8, 2\)")),
    (_scales_dtype, r"blockwise tensor 'w2': its scales tensor 'w2_scales' is int32"),
    (_on_activation, (r"blockwise tensor '.*': blockwise quantization is only defined for "
                      r"constant weights, not for an activation")),
], ids=["short_buffer", "block_size", "scales_shape", "scales_dtype", "activation"])
def test_bad_low_bit_files_are_refused_naming_tensor_and_rule(mutate, message):
    model = mixed_model()
    mutate(model)
    with pytest.raises(qengine.InvalidModelError, match=message):
        qengine.load(unverified_bytes(model))


def test_int2_filter_on_conv_is_refused_by_rule():
    b = GraphBuilder()
    x = b.input("x", (1, 5, 5, 2))
    w = b.const("w", np.zeros((3, 3, 3, 2), np.int8), "int2",
                Quantization(np.full(3, 0.1), np.zeros(3), 0))
    y = b.op("CONV_2D", [x, w, b.const("b", np.zeros(3, np.float32))], out_shape=(1, 5, 5, 3),
             options=options("Conv2DOptions", padding=SAME, strideH=1, strideW=1))
    with pytest.raises(qengine.InvalidModelError,
                       match="int2 filter 'w': TFLite has no int2 kernel for hybrid CONV_2D"):
        qengine.Interpreter(b.build([y]))


# -- kernels against slow twins ----------------------------------------------------------------


def blockwise_fc_twin(x, w, scales, block, bias):
    """EvalBlockwise4Bit value by value with float32 scalars."""
    q, sf, zp = hybrid.quantize_asymmetric(x)
    f32 = np.float32
    out = np.zeros((len(x), len(w)), np.float32)
    for b in range(len(x)):
        for n in range(len(w)):
            total, kfsum = f32(0), f32(0)
            for j in range(w.shape[1] // block):
                cols = slice(j * block, (j + 1) * block)
                acc = int(np.dot(q[b, cols].astype(np.int64), w[n, cols].astype(np.int64)))
                total = f32(total + f32(acc) * scales[n, j])
                kfsum = f32(kfsum + scales[n, j] * f32(int(w[n, cols].sum())))
            total = f32(f32(total - f32(zp[b]) * kfsum) * sf[b])
            out[b, n] = total if bias is None else f32(total + bias[n])
    return out


@pytest.mark.parametrize("with_bias", [True, False])
def test_blockwise_fc_kernel_matches_twin(with_bias):
    r = np.random.default_rng(3)
    x = (r.standard_normal((3, 64)) * 2 + 0.3).astype(np.float32)
    w = r.integers(-8, 8, (5, 64)).astype(np.int8)
    scales = r.uniform(0.01, 0.1, (5, 2)).astype(np.float16).astype(np.float32)
    bias = r.standard_normal(5).astype(np.float32) if with_bias else None
    q, sf, zp = hybrid.quantize_asymmetric(x)
    got = blockwise_hybrid_fc(q, sf, zp, w, scales, 32,
                              np.zeros(5, np.float32) if bias is None else bias, with_bias)
    np.testing.assert_array_equal(got, blockwise_fc_twin(x, w, scales, 32, bias))


def unpack_run_twin(packed: bytes, dtype: str, offset: int, length: int) -> list[int]:
    """TFLite's Unpack4Bit/Unpack2Bit: from byte offset // k, every field in byte order."""
    bits = lowbit.BITS[dtype]
    per_byte = 8 // bits
    out = []
    for i in range(length):
        byte = packed[offset // per_byte + i // per_byte]
        field = (byte >> (bits * (i % per_byte))) & ((1 << bits) - 1)
        out.append(field - (1 << bits) if field >= 1 << (bits - 1) else field)
    return out


@pytest.mark.parametrize("dtype,row,run", [("int4", 7, 7), ("int2", 11, 11), ("int4", 12, 4),
                                           ("int2", 12, 6)])
def test_lookup_rows_reads_runs_as_tflite_does(dtype, row, run):
    r = np.random.default_rng(4)
    low, high = lowbit.RANGES[dtype]
    table = r.integers(low, high + 1, (6, row)).astype(np.int8)
    packed = lowbit.pack(table, dtype)
    ids = np.array([5, 0, 3, 3], np.int32)
    got = lookup_rows(table.reshape(-1), ids, row, run, 8 // lowbit.BITS[dtype])
    want = [[v for j in range(row // run)
             for v in unpack_run_twin(packed, dtype, i * row + j * run, run)] for i in ids]
    assert got.tolist() == want


# -- writing -----------------------------------------------------------------------------------


def float_mlp():
    """x [1, 64] -> FC 64x64 (float32 weights) -> FC 8x64 (float16 weights + DEQUANTIZE)."""
    r = np.random.default_rng(5)
    b = GraphBuilder()
    x = b.input("x", (1, 64))
    w = b.const("w", r.standard_normal((64, 64)).astype(np.float32))
    half = b.const("w2_fp16", r.standard_normal((8, 64)).astype(np.float16))
    w2 = b.op("DEQUANTIZE", [half], out_shape=(8, 64), out_dtype="float32")
    h = b.op("FULLY_CONNECTED", [x, w, None], out_shape=(1, 64),
             options=options("FullyConnectedOptions"))
    y = b.op("FULLY_CONNECTED", [h, w2, None], out_shape=(1, 8),
             options=options("FullyConnectedOptions"))
    return b.build([y])


@pytest.mark.parametrize("bits,dtype", [(8, "int8"), (4, "int4"), (3, "int4"), (2, "int2")])
def test_dynamic_weight_bits_store_tflite_types_and_float16_weights_count(bits, dtype):
    q = qengine.quantize(float_mlp(), "dynamic", weight_bits=bits, min_weight_elements=0,
                         quiet=True)
    filters = [op.inputs[1] for op in q.main.operators if op.type == "FULLY_CONNECTED"]
    assert [f.dtype for f in filters] == [dtype, dtype]  # the float16 one too
    assert all(op.type != "DEQUANTIZE" for op in q.main.operators)
    qmax = 2 ** (bits - 1) - 1
    assert all(np.abs(f.data).max() == qmax for f in filters)
    assert qengine.load(q.to_bytes()).main.operators[0].inputs[1].dtype == dtype


def test_dynamic_blockwise_writes_float16_block_scales():
    q = qengine.quantize(float_mlp(), "dynamic", weight_bits=4, block_size=32, quiet=True)
    shapes = []
    for op in q.main.operators:
        w = op.inputs[1]
        block = w.quantization.blockwise
        assert (w.dtype, block.block_size, block.scales.dtype) == ("int4", 32, "float16")
        shapes.append(block.scales.shape)
        scale = block.scales.data.astype(np.float64)
        assert np.abs(w.data).max(axis=1).min() == 7  # the largest value of a row hits 7
        assert np.all(scale > 0)
    assert shapes == [(64, 2), (8, 2)]
    assert diff(q, qengine.load(q.to_bytes())) == []


def test_weight_only_stores_low_bit_behind_dequantize():
    q = qengine.quantize(float_mlp(), "weight-only", weight_bits=4, quiet=True)
    dequantize = [op for op in q.main.operators if op.type == "DEQUANTIZE"]
    assert [op.inputs[0].dtype for op in dequantize] == ["int4", "int4"]
    assert all(op.inputs[1].dtype == "float32" for op in q.main.operators
               if op.type == "FULLY_CONNECTED")


@pytest.mark.parametrize("args,message", [
    ({"mode": "weight-only", "block_size": 32}, "TFLite's DEQUANTIZE has no blockwise path"),
    ({"mode": "dynamic", "weight_bits": 2, "block_size": 32},
     "TFLite runs blockwise FULLY_CONNECTED only for a constant int4 filter"),
    ({"mode": "dynamic", "weight_bits": 4, "block_size": 48}, "block size 48 does not divide"),
])
def test_combinations_tflite_cannot_run_are_refused(args, message):
    with pytest.raises(qengine.QuantizationError, match=message):
        qengine.quantize(float_mlp(), quiet=True, **args)


def test_cli_exits_1_when_nothing_was_quantized(tmp_path, capsys):
    from qengine.cli import main

    b = GraphBuilder()
    x = b.input("x", (1, 4))
    y = b.op("ADD", [x, x], out_shape=(1, 4), options=options("AddOptions"))
    source, out = tmp_path / "add.tflite", tmp_path / "q.tflite"
    b.build([y]).save(source)
    for mode in ("dynamic", "weight-only"):
        assert main(["quantize", str(source), "--mode", mode, "-o", str(out)]) == 1
        err = capsys.readouterr().err
        assert f"{mode} quantization changed nothing" in err and not out.exists()


def test_cli_preset_sets_the_format_and_conflicts_are_refused(tmp_path, capsys):
    from qengine.cli import main

    source, out = tmp_path / "mlp.tflite", tmp_path / "q.tflite"
    float_mlp().save(source)
    assert main(["quantize", str(source), "--preset", "dynamic_wi4_afp32", "-o", str(out),
                 "--quiet"]) == 0
    assert {op.inputs[1].dtype for op in qengine.load(out).main.operators} == {"int4"}
    assert main(["quantize", str(source), "--preset", "dynamic_wi4_afp32", "--weight-bits",
                 "2", "-o", str(tmp_path / "x.tflite")]) == 2
    assert "sets --weight-bits 4, not 2" in capsys.readouterr().err
    assert main(["quantize", str(source), "--preset", "nope", "-o", str(out)]) == 2
    assert "unknown preset 'nope'" in capsys.readouterr().err


# -- MSE-optimal clipping ----------------------------------------------------------------------


def test_mse_bounds_pick_the_grid_point_with_least_error():
    from qengine.numerics import round_half_away
    from qengine.quantizer.weights import CLIP_RATIOS, mse_bounds

    rows = np.random.default_rng(6).standard_t(3, (5, 40))  # heavy tails: clipping pays
    got = mse_bounds(rows, -1, 1)
    for row, bound in zip(rows, got):
        peak = np.abs(row).max()

        def error(b, row=row):
            q = np.clip(round_half_away(row / b), -1, 1)
            return float(((row - q * b) ** 2).sum())

        errors = [error(r * peak) for r in CLIP_RATIOS]
        assert error(bound) == min(errors) and bound < peak  # int2: clipping always wins here


def test_weight_clipping_is_a_scheme_field_and_a_quantize_option():
    from qengine.quantizer.scheme import Recipe, Scheme

    recipe = Recipe.from_json('{"default": {"weight_bits": 4, "weight_clipping": "mse"}}')
    assert recipe.default == Scheme(weight_bits=4, weight_clipping="mse")
    assert Recipe.from_json(recipe.to_json()) == recipe
    with pytest.raises(qengine.InputError, match="weight_clipping must be one of"):
        Scheme(weight_clipping="l1")
    plain = qengine.quantize(float_mlp(), "dynamic", weight_bits=2, quiet=True)
    clipped = qengine.quantize(float_mlp(), "dynamic", weight_bits=2, weight_clipping="mse",
                               quiet=True)
    w, v = plain.main.operators[0].inputs[1], clipped.main.operators[0].inputs[1]
    assert np.all(v.quantization.scale <= w.quantization.scale)
    assert np.any(v.quantization.scale < w.quantization.scale)


# -- GPTQ --------------------------------------------------------------------------------------


def test_gptq_with_uncorrelated_inputs_is_nearest_rounding():
    from qengine.numerics import round_half_away
    from qengine.quantizer.gptq import gptq_round

    r = np.random.default_rng(8)
    w = r.standard_normal((6, 20))
    scales = np.abs(w).max(axis=1) / 7
    q, _ = gptq_round(w, np.diag(r.uniform(0.5, 2.0, 20)), 7, scales)
    np.testing.assert_array_equal(q, np.clip(round_half_away(w / scales[:, None]), -7, 7))


@pytest.mark.parametrize("block_size", [0, 8])
def test_gptq_lowers_the_output_error_on_correlated_inputs(block_size):
    from qengine.numerics import round_half_away
    from qengine.quantizer.gptq import gptq_round, hessian
    from qengine.quantizer.weights import float16_scales

    r = np.random.default_rng(9)
    x = r.standard_normal((256, 8)) @ r.standard_normal((8, 32))  # rank 8: strongly correlated
    w = r.standard_normal((5, 32))
    if block_size:
        def block_scale(columns):
            return float16_scales(np.abs(columns).max(axis=1), 7).astype(np.float64)

        q, scales = gptq_round(w, hessian(x), 7, block_size=8, block_scale=block_scale)
        wide = np.repeat(scales, 8, axis=1)
        nearest = np.repeat(float16_scales(np.abs(w.reshape(5, 4, 8)).max(axis=2), 7)
                            .astype(np.float64), 8, axis=1)
    else:
        wide = nearest = np.repeat((np.abs(w).max(axis=1) / 7)[:, None], 32, axis=1)
        q, _ = gptq_round(w, hessian(x), 7, wide[:, 0])
    q_nearest = np.clip(round_half_away(w / nearest), -7, 7)
    error_gptq = np.sum((x @ (w - q * wide).T) ** 2)
    error_nearest = np.sum((x @ (w - q_nearest * nearest).T) ** 2)
    assert np.abs(q).max() <= 7 and error_gptq < 0.5 * error_nearest


def test_gptq_needs_calibration_data():
    with pytest.raises(qengine.QuantizationError, match="GPTQ needs calibration data"):
        qengine.quantize(float_mlp(), "dynamic", weight_bits=4, weight_rounding="gptq",
                         quiet=True)
    x = np.random.default_rng(10).standard_normal((16, 64)).astype(np.float32)  # 16 samples
    q = qengine.quantize(float_mlp(), "dynamic", weight_bits=4, weight_rounding="gptq",
                         calibration=x, quiet=True)
    assert q.main.operators[0].inputs[1].dtype == "int4"


def test_gptq_is_selectable_per_op_in_a_recipe_for_the_full_integer_modes():
    from qengine.quantizer.scheme import Override, Recipe, Scheme

    x = np.random.default_rng(11).standard_normal((32, 64)).astype(np.float32)
    plain = qengine.quantize(float_mlp(), calibration=x, recipe=Recipe(Scheme(weight_bits=4)),
                             quiet=True)
    recipe = Recipe(Scheme(weight_bits=4), (Override("FULLY_CONNECTED", Scheme(
        weight_bits=4, weight_rounding="gptq")),))
    assert Recipe.from_json(recipe.to_json()) == recipe
    gptq = qengine.quantize(float_mlp(), calibration=x, recipe=recipe, quiet=True)
    fc = [(op.inputs[1], g.inputs[1]) for op, g in zip(plain.main.operators,
                                                       gptq.main.operators)
          if op.type == "FULLY_CONNECTED"]
    assert all(a.dtype == b.dtype == "int4" for a, b in fc)
    assert all(np.array_equal(a.quantization.scale, b.quantization.scale) for a, b in fc)
    assert any(not np.array_equal(a.data, b.data) for a, b in fc)  # other rounding
    assert not gptq.simulated and gptq.to_bytes()
