"""Rounding shared by every part of qengine that is not a Numba kernel."""

from __future__ import annotations

import numpy as np


def round_half_away(x):
    """C's std::round (TfLiteRound) on a scalar or an array, exactly: trunc, then one step away
    from 0 when the fraction is at least 0.5. (floor(|x| + 0.5) is wrong for the float just
    below 0.5, where the addition rounds up.) Keeps float dtype; scalars give a numpy float."""
    whole = np.trunc(x)
    return whole + np.where(np.abs(x - whole) >= 0.5, np.sign(x), 0).astype(whole.dtype)


def round_half_away_int(x: float) -> int:
    return int(round_half_away(float(x)))
