"""Make docs/model_explorer.png: the bundled digit model, int8, with compare's own SQNR shown by
Model Explorer in headless Chromium (the same path the browser test drives).

    python scripts/model_explorer_screenshot.py
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

import explorer_browser

import qengine
from qengine.cli import main


def run() -> None:
    reason = explorer_browser.missing()
    if reason:
        sys.exit(f"error: {reason}")
    data = REPO / "examples" / "digits_data.npz"
    model = REPO / "examples" / "digits.tflite"
    with tempfile.TemporaryDirectory() as tmp:
        quant = Path(tmp) / "digits_int8.tflite"
        qengine.quantize(model, calibration=np.load(data)["calibration"], quiet=True).save(quant)
        out = Path(tmp) / "digits_int8.json"
        assert main(["compare", str(model), str(quant), "--data", str(data), "--data-key",
                     "test_images", "--model-explorer", str(out)]) == 0
        files = [out, out.with_name(out.stem + "_accumulated.json"),
                 out.with_name(out.stem + "_saturation.json")]
        with explorer_browser.server(quant, files) as url:
            explorer_browser.node_table(url, REPO / "docs" / "model_explorer.png", expand=True)
    print("wrote docs/model_explorer.png")


if __name__ == "__main__":
    run()
