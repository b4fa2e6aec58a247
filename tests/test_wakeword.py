"""Published streaming wake-word models (microWakeWord, int8, resource variables) on speech.

pymicro-wakeword ships the models and pymicro-features the audio frontend they were trained
with; espeak-ng synthesizes the phrases. One stream holds every wake phrase and a distractor,
separated by silence, and is fed 3 feature frames per call, as the package does. qengine's
output must equal TFLite BUILTIN_REF's on every call, so the detections (the package's rule:
the mean of the last `sliding_window_size` probabilities above `probability_cutoff`) happen on
the same calls; each model must detect its own phrase there, or the test would prove little.
"""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import wave
from pathlib import Path

import numpy as np
import pytest

import qengine

pytestmark = pytest.mark.tf

RATE = 16000
STRIDE = 3  # feature frames per call
# (model, phrase, espeak-ng voice): voices chosen so that TFLite's run detects the phrase
PHRASES = [("okay_nabu", "okay nabu", "en"), ("hey_jarvis", "hey jarvis", "en-us+f3"),
           ("hey_mycroft", "hey mycroft", "en"), ("alexa", "alexa", "en")]
DISTRACTOR = ("good morning", "en")


def _speak(text: str, voice: str) -> np.ndarray:
    """16 kHz int16 speech (espeak-ng writes 22050 Hz; linear interpolation to 16 kHz)."""
    wav = subprocess.run(["espeak-ng", "-v", voice, "-s", "160", "--stdout", text],
                         capture_output=True, check=True, timeout=60).stdout
    with wave.open(io.BytesIO(wav)) as w:
        rate, audio = w.getframerate(), np.frombuffer(w.readframes(w.getnframes()), np.int16)
    times = np.arange(int(len(audio) * RATE / rate)) / RATE
    return np.round(np.interp(times, np.arange(len(audio)) / rate, audio)).astype(np.int16)


@pytest.fixture(scope="module")
def stream():
    """(features (1, T, 40) float32, {model: (first call, last call) of its phrase})."""
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed (apt-get install espeak-ng)")
    features_module = pytest.importorskip("pymicro_wakeword")
    silence = np.zeros(RATE // 2, np.int16)
    pieces, spans, length = [silence], {}, len(silence)
    for name, text, voice in PHRASES + [(None, *DISTRACTOR)]:
        speech = _speak(text, voice)
        if name:
            spans[name] = (length, length + len(speech))
        pieces += [speech, silence]
        length += len(speech) + len(silence)
    audio = np.concatenate(pieces)
    frontend = features_module.MicroWakeWordFeatures()
    features = np.concatenate(list(frontend.process_streaming(audio.tobytes())), axis=1)
    samples_per_call = STRIDE * 160  # the frontend steps 10 ms per frame
    calls = {name: (start // samples_per_call, end // samples_per_call + 1)
             for name, (start, end) in spans.items()}
    return features.astype(np.float32), calls


def _model_dir() -> Path:
    package = pytest.importorskip("pymicro_wakeword")
    return Path(package.__file__).parent / "models"


def _detections(probabilities: list[float], window: int, cutoff: float) -> list[int]:
    return [i for i in range(window - 1, len(probabilities))
            if np.mean(probabilities[i - window + 1:i + 1]) > cutoff]


@pytest.mark.parametrize("name", [p[0] for p in PHRASES])
def test_wakeword_model_matches_tflite_on_every_call(stream, name):
    from tflite_ref import make_interpreter

    features, calls = stream
    path = _model_dir() / f"{name}.tflite"
    config = json.loads((_model_dir() / f"{name}.json").read_text())["micro"]
    interpreter = qengine.Interpreter(path)
    tfl = make_interpreter(path)
    tfl.allocate_tensors()
    (tin,), (tout,) = tfl.get_input_details(), tfl.get_output_details()
    scale, zero_point = tin["quantization"]
    out_scale, out_zero_point = tout["quantization"]
    got_p, want_p = [], []
    for i in range(features.shape[1] // STRIDE):
        chunk = features[:, i * STRIDE:(i + 1) * STRIDE]
        x = np.clip(np.round(chunk / scale + zero_point), -128, 127).astype(np.int8)
        tfl.set_tensor(tin["index"], x)
        tfl.invoke()
        want = tfl.get_tensor(tout["index"])
        got = interpreter.run(x)[tout["name"]]
        assert got.dtype == want.dtype and np.array_equal(got, want), (
            f"call {i}: qengine {got.ravel()} != TFLite {want.ravel()}")
        got_p.append((float(got.item()) - out_zero_point) * out_scale)
        want_p.append((float(want.item()) - out_zero_point) * out_scale)
    window, cutoff = config["sliding_window_size"], config["probability_cutoff"]
    want_detections = _detections(want_p, window, cutoff)
    assert _detections(got_p, window, cutoff) == want_detections
    first, last = calls[name]
    assert any(first <= i <= last + window for i in want_detections), (
        f"TFLite detects {name} at calls {want_detections}, not in its phrase {calls[name]}")


def test_cli_stream_compare_on_a_published_model(tmp_path, capsys):
    """`qengine run MODEL --input seq.npy --stream --compare`: every call against one TFLite
    interpreter fed the same chunks; the stacked outputs are written."""
    from qengine.cli import main

    path = _model_dir() / "okay_nabu.tflite"
    seq = np.random.default_rng(0).integers(-128, 128, (40, 1, 3, 40)).astype(np.int8)
    np.save(tmp_path / "seq.npy", seq)
    code = main(["run", str(path), "--input", str(tmp_path / "seq.npy"), "--stream",
                 "--compare", "--output", str(tmp_path / "out.npz")])
    out = capsys.readouterr().out
    assert code == 0 and "PASS" in out and "FAIL" not in out and "40 calls" in out
    with np.load(tmp_path / "out.npz") as saved:
        assert next(iter(saved.values())).shape == (40, 1, 1)
