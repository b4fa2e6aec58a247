"""The full-integer (8x8_16) LSTM step of TFLite (lstm_eval.cc LstmStepInteger8x8_16 and the
portable tensor_utils it calls): int8 input, output state and weights, int16 cell state and
gates, int32 biases.

Per gate (input, forget, cell, output; `g` below):
  gate = clamp16(MBQM(b_in + sum x w_in, M_in) + 0)                 (b_in: bias - x_zp * row sum)
  gate = clamp16(MBQM(b_rec + sum h w_rec, M_rec) + gate)           (b_rec: -h_zp * row sum)
  gate = clamp16(gate + MBQM(p * c, M_p))                           peephole (not the cell gate)
  gate = layer_norm(gate)                                           (integer ApplyLayerNorm)
  gate = sigmoid_F3(gate), or tanh_F3 for the cell gate             (gemmlowp int16, a table)
  c = int16(RDBPOT(f c, 15));  c = sat16(c + int16(RDBPOT(i g, 30 + cell_scale)))   (i = 1 - f
       for CIFG), clipped to +-cell_clip
  t = tanh_F(15 + cell_scale)(c);  h = clamp8(MBQM(o t, M_hidden) + hidden_zp)
  with projection: h = clamp8(MBQM(proj_b' + sum w_proj clamp8(MBQM(o t) - hidden_zp)) + h_zp)

The gemmlowp int16 sigmoid and tanh are computed once per input format over all 65536 inputs
(`gemmlowp_int16_table`); the step kernel looks them up.
"""

from __future__ import annotations

import numpy as np

from .elementwise import inv_sqrt_multiplier_exp
from .fixedpoint import mbqm, rdbpot, wrap_int32
from .jit import kernel

__all__ = ["gemmlowp_int16_table", "lstm_integer_sequence"]

# -- gemmlowp fixed point on int16 raws, vectorized (int64 arrays holding int16 values) -------


def _w16(x):
    return ((np.asarray(x, np.int64) + 32768) & 0xFFFF) - 32768


def _srdhm16(a, b):
    """SaturatingRoundingDoublingHighMul<int16>: int16((a b + nudge) / 2^15), C division."""
    v = np.asarray(a, np.int64) * b
    v = v + np.where(v >= 0, 1 << 14, 1 - (1 << 14))
    q = np.where(v >= 0, v >> 15, -((-v) >> 15))
    return np.where((a == -32768) & (b == -32768), 32767, _w16(q))


def _rdbpot16(x, e: int):
    mask = (1 << e) - 1
    threshold = (mask >> 1) + (x < 0)
    return _w16((x >> e) + ((x & mask) > threshold))


def _mul_pot16(x, e: int):
    """SaturatingRoundingMultiplyByPOT<e> on int16: saturating left or rounding right shift."""
    if e == 0:
        return x
    if e < 0:
        return _rdbpot16(x, -e)
    threshold = (1 << (15 - e)) - 1
    return np.where(x > threshold, 32767, np.where(x < -threshold, -32768, _w16(x << e)))


def _const16(raw32: int) -> int:
    """An int32 gemmlowp constant on int16: RoundingDivideByPOT(raw32, 16)."""
    return int(rdbpot(raw32, 16))


def _rounding_half_sum16(a, b):
    s = np.asarray(a, np.int64) + b
    v = s + np.where(s >= 0, 1, -1)
    return _w16(np.where(v >= 0, v // 2, -((-v) // 2)))


def _exp_quarter(a):
    """exp(a) for a in [-1/4, 0), F0: Taylor series around -1/8."""
    x = _w16(a + (1 << 12))
    x2 = _srdhm16(x, x)
    x3 = _srdhm16(x2, x)
    x4 = _srdhm16(x2, x2)
    x4_over_4 = _mul_pot16(x4, -2)
    poly = _mul_pot16(_w16(_srdhm16(_w16(x4_over_4 + x3), _const16(715827883)) + x2), -1)
    constant = _const16(1895147668)
    return np.clip(constant + _srdhm16(constant, _w16(x + poly)), -32768, 32767)


_EXP_BARREL = [(-2, 1672461947), (-1, 1302514674), (0, 790015084), (1, 290630308),
               (2, 39332535), (3, 720401), (4, 242)]


def _exp_on_negative(a, integer_bits: int):
    """exp(a) for a <= 0 given as F_integer_bits; F0 result."""
    fractional = 15 - integer_bits
    quarter = 1 << (fractional - 2)
    a_mod = _w16((a & (quarter - 1)) - quarter)
    result = _exp_quarter(_mul_pot16(a_mod, integer_bits))
    remainder = _w16(a_mod - a)
    for exponent, multiplier in _EXP_BARREL:
        if integer_bits > exponent:
            bit = (remainder & (1 << (fractional + exponent))) != 0
            result = np.where(bit, _srdhm16(result, _const16(multiplier)), result)
    if integer_bits > 5:
        result = np.where(a < _const16(-(1 << (36 - integer_bits))), 0, result)
    return np.where(a == 0, 32767, result)


def _newton_reciprocal(half_denominator):
    """x ~ 1 / half_denominator in F2 after three Newton-Raphson steps from 48/17 - 32/17 d."""
    x = _w16(_const16(1515870810) + _srdhm16(half_denominator, _const16(-1010580540)))
    for _ in range(3):
        one_minus = _w16((1 << 13) - _srdhm16(half_denominator, x))
        x = _w16(x + _mul_pot16(_srdhm16(x, one_minus), 2))
    return x


def _logistic(a, integer_bits: int):
    positive = a > 0
    magnitude = np.where(positive, a, _w16(-a))
    exp = _exp_on_negative(_w16(-magnitude), integer_bits)
    half_denominator = _rounding_half_sum16(exp, 32767)
    if_positive = _mul_pot16(_newton_reciprocal(half_denominator), 1)  # 1 / (1 + e^-|a|)
    if_negative = _w16(32767 - if_positive)
    return np.where(a == 0, _const16(1 << 30), np.where(positive, if_positive, if_negative))


def _tanh(a, integer_bits: int):
    negative = a < 0
    n = np.where(negative, a, _w16(-a))
    exp = _exp_on_negative(n, integer_bits + 1)  # e^(2n)
    half_denominator = _rounding_half_sum16(exp, 32767)
    t = _mul_pot16(_w16(_newton_reciprocal(half_denominator) - (1 << 13)), 2)  # (1-e)/(1+e)
    return np.where(a == 0, 0, np.where(negative, _w16(-t), t))


def gemmlowp_int16_table(function: str, integer_bits: int) -> np.ndarray:
    """gemmlowp logistic or tanh of every int16 raw as F_integer_bits, F0 (int16) results,
    indexed by raw + 32768."""
    if not 0 <= integer_bits <= 6:
        raise ValueError(f"integer bits {integer_bits} outside TFLite's 0..6")
    raws = np.arange(-32768, 32768, dtype=np.int64)
    values = (_logistic if function == "sigmoid" else _tanh)(raws, integer_bits)
    return values.astype(np.int16)


# -- the step kernel ----------------------------------------------------------------------------


@kernel
def _clamp(v, low, high):
    return min(max(v, np.int64(low)), np.int64(high))


@kernel
def _matmul_accumulate(vector, weights, bias, multiplier, shift, gate):
    """gate[r] = clamp16(MBQM(bias[r] + sum vector w[r], M, shift) + gate[r])
    (PortableMatrixBatchVectorMultiplyAccumulate, int16 output, zero point 0)."""
    for r in range(weights.shape[0]):
        acc = np.int64(bias[r])
        for k in range(weights.shape[1]):
            acc += np.int64(vector[k]) * np.int64(weights[r, k])
        acc = mbqm(wrap_int32(acc), multiplier, shift)
        gate[r] = _clamp(acc + gate[r], -32768, 32767)


@kernel
def _layer_norm(gate, weights, bias, multiplier, shift, variance_guard):
    """PortableApplyLayerNorm on one row: the integer mean and variance (times 2^10 and 2^20),
    1/stddev from GetInvSqrtQuantizedMultiplierExp, then (x - mean) / stddev * w + b scaled."""
    n = gate.shape[0]
    total = np.int64(0)
    total_sq = np.int64(0)
    for j in range(n):
        total += gate[j]
        total_sq += gate[j] * gate[j]
    mean = wrap_int32(_trunc_div(total * 1024, n))
    variance = total_sq * ((1 << 20) // n) - mean * mean
    variance2 = wrap_int32(_trunc_div(variance, 1 << 20))
    if variance2 < 1:
        variance2 = np.int64(variance_guard)
    inv_a, inv_b = inv_sqrt_multiplier_exp(variance2)
    for j in range(n):
        rescaled = mbqm(wrap_int32(1024 * gate[j] - mean), inv_a, inv_b)
        val3 = wrap_int32(wrap_int32(rescaled * np.int64(weights[j])) + np.int64(bias[j]))
        val4 = wrap_int32(_trunc_div(val3 + 512 if val3 > 0 else val3 - 512, 1024))
        gate[j] = _clamp(mbqm(val4, multiplier, shift + 12), -32768, 32767)


@kernel
def _trunc_div(a, b):
    """C integer division (toward zero)."""
    q = abs(a) // abs(b)
    return q if (a >= 0) == (b > 0) else -q


@kernel
def _gate(g, x, h, c, w_in, w_rec, bias_in, bias_rec, m_in, s_in, m_rec, s_rec,
          peephole, m_peep, s_peep, use_peephole, ln_w, ln_b, m_ln, s_ln, ln_guard,
          use_layer_norm, table, gate):
    """One gate (CalculateLstmGateInteger8x8_16) into `gate` (int64 scratch of n_cell)."""
    gate[:] = 0
    _matmul_accumulate(x, w_in[g], bias_in[g], m_in[g], s_in[g], gate)
    _matmul_accumulate(h, w_rec[g], bias_rec[g], m_rec[g], s_rec[g], gate)
    if use_peephole and g != 2:
        for j in range(gate.shape[0]):
            product = mbqm(np.int64(peephole[g, j]) * np.int64(c[j]), m_peep[g], s_peep[g])
            gate[j] = _clamp(product + gate[j], -32768, 32767)
    if use_layer_norm:
        _layer_norm(gate, ln_w[g], ln_b[g], m_ln[g], s_ln[g], ln_guard[g])
    for j in range(gate.shape[0]):
        gate[j] = table[gate[j] + 32768]


@kernel
def lstm_integer_sequence(steps, h, c, w_in, w_rec, bias_in, bias_rec, m_in, s_in, m_rec,
                          s_rec, peephole, m_peep, s_peep, use_peephole, ln_w, ln_b, m_ln,
                          s_ln, ln_guard, use_layer_norm, cifg, sigmoid, tanh_gate, tanh_cell,
                          tanh_of_input_gate, cell_shift, cell_clip, m_hidden, s_hidden, hidden_zp, proj_w,
                          proj_bias, m_proj, s_proj, use_projection, h_zp, proj_clip, out):
    """LstmStepInteger8x8_16 over steps [time, batch, n_input] (int8); h [batch, n_output]
    int8 and c [batch, n_cell] int16 are updated in place; out [time, batch, n_output] int8.
    Gate g in 0..3 is input, forget, cell, output; cell_shift = 30 + log2(cell scale).
    tanh_of_input_gate: TFLite's tanh of the cell state is a no-op (cell scale below 2^-15)
    and leaves the input gate in its place."""
    n_cell = c.shape[1]
    gates = np.zeros((4, n_cell), dtype=np.int64)
    hidden = np.zeros(n_cell, dtype=np.int64)
    for t in range(steps.shape[0]):
        for b in range(steps.shape[1]):
            x, hb, cb = steps[t, b], h[b], c[b]
            for g in range(4):
                if g == 0 and cifg:
                    continue
                if g == 3:  # the output gate sees the updated cell state
                    _update_cell(cb, gates, cifg, cell_shift, cell_clip)
                _gate(g, x, hb, cb, w_in, w_rec, bias_in, bias_rec, m_in, s_in, m_rec, s_rec,
                      peephole, m_peep, s_peep, use_peephole, ln_w, ln_b, m_ln, s_ln, ln_guard,
                      use_layer_norm, tanh_gate if g == 2 else sigmoid, gates[g])
            for j in range(n_cell):
                tanh_c = gates[0, j] if tanh_of_input_gate else \
                    np.int64(tanh_cell[np.int64(cb[j]) + 32768])
                product = mbqm(gates[3, j] * tanh_c, m_hidden, s_hidden)
                zp = -hidden_zp if use_projection else hidden_zp
                hidden[j] = _clamp(product + zp, -128, 127)
            if use_projection:
                for r in range(proj_w.shape[0]):
                    acc = np.int64(proj_bias[r])
                    for k in range(n_cell):
                        acc += hidden[k] * np.int64(proj_w[r, k])
                    v = _clamp(mbqm(wrap_int32(acc), m_proj, s_proj) + h_zp, -128, 127)
                    if proj_clip > 0:
                        v = _clamp(v, -proj_clip, proj_clip)
                    hb[r] = v
            else:
                for j in range(n_cell):
                    hb[j] = hidden[j]
            for r in range(hb.shape[0]):
                out[t, b, r] = hb[r]


@kernel
def _update_cell(cb, gates, cifg, cell_shift, cell_clip):
    """UpdateLstmCellInteger: c = int16(RDBPOT(f c, 15)) + int16(RDBPOT(i g, 30 + cell_scale)),
    saturated, then clipped; CIFG uses i = 32767 - f."""
    for j in range(cb.shape[0]):
        forget = gates[1, j]
        kept = _wrap16(rdbpot(forget * np.int64(cb[j]), 15))
        gate_in = 32767 - forget if cifg else gates[0, j]
        added = _wrap16(rdbpot(gate_in * gates[2, j], cell_shift))
        v = _clamp(kept + added, -32768, 32767)
        if cell_clip > 0:
            v = _clamp(v, -cell_clip, cell_clip)
        cb[j] = v


@kernel
def _wrap16(x):
    return ((np.int64(x) + 32768) & 0xFFFF) - 32768
