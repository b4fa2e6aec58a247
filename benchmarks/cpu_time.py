"""CPU time per run, one thread, qengine against TFLite's default interpreter, on the published
float models: a figure that other processes on the machine disturb far less than wall time.

    python benchmarks/cpu_time.py [MODEL ...]

Each engine runs the same file on the same random input (seed 0) in this process; a run's figure
is the process CPU time (`time.process_time`) it took, and each engine's is the lower quartile
of 15 runs after one warm-up. With one thread on each side, CPU time is the run's own work plus
what a busy machine adds to it (cache and memory sharing, not waiting for a core). Models come
from `.cache/published` (fetched by `tests/published_models.py`, as `benchmarks/published.py`).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

import qengine

CACHE = Path(__file__).resolve().parents[1] / ".cache" / "published"
MODELS = ["face_detection_short_range", "face_detection_full_range",
          "face_detection_full_range_sparse", "face_detection_back", "face_landmark",
          "iris_landmark", "hand_recrop", "hand_landmark_lite", "hand_landmark_full",
          "palm_detection_lite", "palm_detection_full", "pose_detection", "pose_landmark_full",
          "nmp"]
RUNS = 15


def cpu_ms(run) -> float:
    run()
    times = []
    for _ in range(RUNS):
        start = time.process_time()
        run()
        times.append(time.process_time() - start)
    return sorted(times)[RUNS // 4] * 1e3


def compare(name: str) -> tuple[float, float]:
    from ai_edge_litert.interpreter import Interpreter as TFLite

    path = str(CACHE / f"{name}.tflite")
    ours = qengine.Interpreter(path, num_threads=1)
    rng = np.random.default_rng(0)
    inputs = {t.name: rng.random(t.shape, dtype=np.float32) for t in ours.model.main.inputs}
    theirs = TFLite(model_path=path, num_threads=1)
    theirs.allocate_tensors()
    for detail, value in zip(theirs.get_input_details(), inputs.values()):
        theirs.set_tensor(detail["index"], inputs.get(detail["name"], value))
    return cpu_ms(lambda: ours.run(inputs)), cpu_ms(theirs.invoke)


def main(names: list[str]) -> None:
    ratios = []
    print("| model | qengine CPU ms | TFLite default CPU ms | ratio |\n|---|---|---|---|")
    for name in names or MODELS:
        ours, theirs = compare(name)
        ratios.append(ours / theirs)
        print(f"| {name} | {ours:.2f} | {theirs:.2f} | {ours / theirs:.2f} |", flush=True)
    print(f"\ngeometric mean qengine / TFLite: {np.exp(np.mean(np.log(ratios))):.2f}")


if __name__ == "__main__":
    main(sys.argv[1:])
