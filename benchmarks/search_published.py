"""`qengine search --target-sqnr` on published models, checked in TFLite on held-out photos.

    python benchmarks/search_published.py [--models NAME ...] [--target 30] [--json OUT]

Models come from tests/published_models.py (.cache/published). Inputs are scikit-image's
sample photos (`skimage.data`, those shipped in the wheel), randomly cropped, mirrored and
resized to the model's input, in three disjoint sets of photos, each mixing colour, grey
(repeated over 3 channels), dark, textured and high-contrast pictures: calibration (astronaut,
coffee, rocket, camera, hubble_deep_field, text, gravel, clock), the search's --data (chelsea,
immunohistochemistry, coins, page, grass) and held-out (retina, stereo_motorcycle's left view,
moon, brick, microaneurysms). Pixels are scaled to the range each model expects.
For each model: search's written file size against the published file, the worst-output SQNR
of that file in TFLite (reference kernels) against the published float file in TFLite on the
held-out set, and the wall time of the `qengine search` command.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
import published_models

WORK = ROOT / ".cache" / "search_published"
PHOTOS = {"calibration": ("astronaut", "coffee", "rocket", "camera", "hubble_deep_field", "text",
                          "gravel", "clock"),
          "data": ("chelsea", "immunohistochemistry", "coins", "page", "grass"),
          "held_out": ("retina", "stereo_motorcycle", "moon", "brick", "microaneurysms")}
COUNTS = {"calibration": 40, "data": 15, "held_out": 25}
MODELS = ("face_detection_short_range", "face_detection_full_range", "iris_landmark",
          "palm_detection_lite", "hand_landmark_lite", "selfie_segmentation", "face_landmark",
          "pose_detection")
# MediaPipe's input ranges: the face detectors take [-1, 1], the other models [0, 1]
MINUS_ONE_TO_ONE = ("face_detection_short_range", "face_detection_full_range")


def photo(name: str) -> np.ndarray:
    import skimage.data

    image = getattr(skimage.data, name)()
    image = np.asarray(image[0] if isinstance(image, tuple) else image)  # stereo: the left one
    return np.repeat(image[..., None], 3, axis=2) if image.ndim == 2 else image[..., :3]


def samples(kind: str, shape, model: str, seed: int = 0) -> np.ndarray:
    """COUNTS[kind] random square crops (30-100% of the short side) of the kind's photos,
    half of them mirrored, resized to the input's height and width, scaled to its range."""
    from skimage.transform import resize

    rng = np.random.default_rng(seed)
    images = [photo(n) for n in PHOTOS[kind]]
    out = []
    for i in range(COUNTS[kind]):
        image = images[i % len(images)]
        side = int(min(image.shape[:2]) * rng.uniform(0.3, 1.0))
        y = rng.integers(0, image.shape[0] - side + 1)
        x = rng.integers(0, image.shape[1] - side + 1)
        crop = image[y:y + side, x:x + side]
        if rng.random() < 0.5:
            crop = crop[:, ::-1]
        out.append(resize(crop, shape[1:3], anti_aliasing=True))  # floats in [0, 1]
    batch = np.stack(out).astype(np.float32)
    return batch * 2 - 1 if model in MINUS_ONE_TO_ONE else batch


def input_shape(path: Path):
    from ai_edge_litert.interpreter import Interpreter

    details = Interpreter(str(path)).get_input_details()
    if len(details) != 1:
        raise SystemExit(f"{path.name}: only single-input models are supported here")
    return tuple(details[0]["shape"])


def write_sets(name: str, path: Path) -> dict[str, Path]:
    shape = input_shape(path)
    WORK.mkdir(parents=True, exist_ok=True)
    files = {}
    for seed, kind in enumerate(PHOTOS):
        files[kind] = WORK / f"{name}.{kind}.npy"
        if not files[kind].exists():
            np.save(files[kind], samples(kind, shape, name, seed))
    return files


def worst_sqnr_in_tflite(written: Path, published: Path, inputs: np.ndarray) -> float:
    """Worst over outputs of 10 log10(sum f^2 / sum (q - f)^2), both files run by TFLite."""
    from tflite_ref import dequantize_outputs, quantize_inputs, run_tflite

    signal, noise = {}, {}
    for x in inputs:
        want = run_tflite(published, [x[None]], "auto")
        got = dequantize_outputs(written, run_tflite(written, quantize_inputs(written, [x[None]]),
                                                     "ref"))
        for (key, f), q in zip(want.items(), got.values(), strict=True):
            f, q = f.astype(np.float64), q.astype(np.float64)
            signal[key] = signal.get(key, 0.0) + float(np.sum(f * f))
            noise[key] = noise.get(key, 0.0) + float(np.sum((q - f) ** 2))
    return min(math.inf if noise[k] == 0 else 10 * math.log10(signal[k] / noise[k])
               for k in signal)


def run_one(name: str, path: Path, target: float) -> dict:
    files = write_sets(name, path)
    out = WORK / f"{name}.search.tflite"
    out.unlink(missing_ok=True)
    command = [sys.executable, "-m", "qengine", "search", str(path), "--calibration",
               str(files["calibration"]), "--data", str(files["data"]), "--target-sqnr",
               str(target), "-o", str(out), "--recipe-out", str(WORK / f"{name}.recipe.json")]
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - start
    row = {"model": name, "published_bytes": path.stat().st_size, "seconds": round(seconds, 1),
           "search_says": (done.stdout.strip().splitlines() or [done.stderr.strip()])[-1]}
    if done.returncode != 0 or not out.exists():
        return row | {"bytes": None, "ratio": None, "held_out_sqnr_db": None}
    held_out = np.load(files["held_out"])
    return row | {"bytes": out.stat().st_size,
                  "ratio": round(out.stat().st_size / path.stat().st_size, 3),
                  "held_out_sqnr_db": round(worst_sqnr_in_tflite(out, path, held_out), 2)}


def table(rows: list[dict]) -> str:
    lines = ["| model | published | search | ratio | held-out SQNR (TFLite) | seconds |",
             "|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        size = "-" if r["bytes"] is None else f"{r['bytes']:,}"
        ratio = "-" if r["ratio"] is None else f"{r['ratio']:.2f}x"
        sqnr = "-" if r["held_out_sqnr_db"] is None else f"{r['held_out_sqnr_db']:.1f} dB"
        lines.append(f"| {r['model']} | {r['published_bytes']:,} | {size} | {ratio} | {sqnr} "
                     f"| {r['seconds']:.0f} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS))
    parser.add_argument("--target", type=float, default=30.0)
    parser.add_argument("--json")
    args = parser.parse_args(argv)
    WORK.mkdir(parents=True, exist_ok=True)
    paths = published_models.fetch()
    rows = []
    for name in args.models:
        rows.append(run_one(name, paths[name], args.target))
        print(json.dumps(rows[-1]), flush=True)
    print(table(rows))
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
