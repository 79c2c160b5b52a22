"""``edgesdk demo`` part for the face app: enrol the bundled photo, verify and identify variants of it.

Uses the shipped default pipeline (BlazeFace → aligned chip → dlib ResNet int8) and a
temporary database, so nothing is left behind. The photo is ``samples/astronaut.jpg``
(:data:`apps.face.app.SAMPLE_PHOTO`, part of the package, so installs and deployment bundles
have it); the variants are it rotated, rescaled, relit and re-encoded
(``sdk.face.samples.variants``), standing in for a second photo of the same person.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from sdk.console import Output


def demo(out: Output) -> None:
    """Enrol, verify, identify and compare on the bundled sample with the default pipeline."""
    from apps.face.app import SAMPLE_PHOTO, FaceApp, FaceError
    from apps.face.loader import load_embedder
    from sdk.embeddings import EmbeddingStore
    from sdk.errors import ModelFormatError
    from sdk.face.samples import load_sample, variants

    try:
        emb = load_embedder(None, "blazeface")
        photo = load_sample(SAMPLE_PHOTO)
    except (ModelFormatError, FileNotFoundError) as e:
        out.emit({"app": "face", "status": "default pipeline missing", "error": str(e)}, f"  default pipeline missing: {e}")
        return
    out.text(f"  pipeline: BlazeFace + {emb.model_name} ({emb.dim}-d, {emb.metric}, threshold {emb.threshold:.3f})")
    with tempfile.TemporaryDirectory() as d:
        store = EmbeddingStore(Path(d) / "faces.db", emb.model_hash, emb.dim, emb.metric, emb.threshold, emb.model_name)
        app = FaceApp(emb, store)
        t0 = time.perf_counter()
        name = SAMPLE_PHOTO.name
        res = app.enroll_vectors("astronaut", app.embed_image(photo, name)[None], [name])
        out.emit({"app": "face", "action": "enroll", **res, "ms": round((time.perf_counter() - t0) * 1e3, 1)},
                 f"  enroll {name} -> {res['embeddings']} embedding(s)")
        shown = 0
        for k, img in enumerate(variants(photo, 12, seed=7)[1:], 1):
            try:
                vec = app.embed_image(img, f"variant {k}")
            except FaceError:
                continue  # some variants are too rotated/small for the detector: show usable ones
            for action, m in (("verify", store.verify("astronaut", vec)), ("identify", store.identify(vec))):
                out.emit({"app": "face", "action": action, "image": f"variant {k}", **m.to_json()},
                         f"  {action:8s} variant {k:2d}: {'MATCH' if m.match else 'no match'} "
                         f"({m.name or 'unknown'}, distance {m.distance:.3f}, threshold {m.threshold:.3f})")
            shown += 1
            if shown == 3:
                break
        store.close()
    lat = {k: round(v["p50_ms"], 1) for k, v in emb.stats.summaries().items() if "p50_ms" in v}
    out.emit({"app": "face", "latency_ms_p50": lat}, f"  p50 latency per stage (ms): {lat}")
