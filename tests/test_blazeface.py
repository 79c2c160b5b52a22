"""BlazeFace decoding, alignment geometry and the default face pipeline (real shipped models)."""

from __future__ import annotations

import subprocess
import sys

import cv2
import numpy as np
import pytest

from apps.face.app import DEFAULT_DETECTOR, DEFAULT_MODEL, SAMPLE_PHOTO
from sdk.card import read_card
from sdk.face import align, samples
from sdk.face.blazeface import (
    KEYPOINTS,
    AnchorConfig,
    BlazeFace,
    DecodeConfig,
    card_output,
    config_from_card,
    decode,
    ssd_anchors,
    weighted_nms,
)
from sdk.face.pipeline import FacePipeline
from sdk.types import Box

# dlib's HOG detector box for the astronaut's face (reference, measured once with dlib-bin)
ASTRONAUT_FACE = Box(175, 76, 265, 166)


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    return samples.load_sample(SAMPLE_PHOTO)


@pytest.fixture(scope="module")
def detector() -> BlazeFace:
    return BlazeFace(DEFAULT_DETECTOR, threads=1)


@pytest.fixture(scope="module")
def pipeline() -> FacePipeline:
    return FacePipeline(DEFAULT_DETECTOR, DEFAULT_MODEL, threads=1)


def test_anchor_layout_matches_mediapipe_short_range():
    a = ssd_anchors()
    assert a.shape == (896, 4)
    # stride 8: 16x16 cells, 2 anchors per cell, row-major, anchors innermost
    np.testing.assert_allclose(a[0], [0.5 / 16, 0.5 / 16, 1, 1])
    np.testing.assert_allclose(a[1], a[0])
    np.testing.assert_allclose(a[2], [1.5 / 16, 0.5 / 16, 1, 1])
    np.testing.assert_allclose(a[2 * 16], [0.5 / 16, 1.5 / 16, 1, 1])
    # stride 16 (three layers merged): 8x8 cells, 6 anchors per cell
    np.testing.assert_allclose(a[512:518], np.tile([0.5 / 8, 0.5 / 8, 1, 1], (6, 1)))
    np.testing.assert_allclose(a[518], [1.5 / 8, 0.5 / 8, 1, 1])
    np.testing.assert_allclose(a[-1], [7.5 / 8, 7.5 / 8, 1, 1])


def test_anchor_sizes_without_fixed_size():
    a = ssd_anchors(AnchorConfig(fixed_anchor_size=False))
    # first layer: min_scale, then the interpolated sqrt(s0 * s1)
    s0, s1 = 0.1484375, 0.1484375 + (0.75 - 0.1484375) / 3
    np.testing.assert_allclose(a[0, 2:], [s0, s0], rtol=1e-6)
    np.testing.assert_allclose(a[1, 2:], [np.sqrt(s0 * s1)] * 2, rtol=1e-6)


def _encode(anchor: np.ndarray, box_cxcywh: tuple, kps: np.ndarray) -> np.ndarray:
    cx, cy, w, h = box_cxcywh
    reg = [(cx - anchor[0]) * 128, (cy - anchor[1]) * 128, w * 128, h * 128]
    reg += list(((kps - anchor[:2]) * 128).reshape(-1))
    return np.asarray(reg, np.float32)


def test_decode_hand_built_tensors():
    anchors = ssd_anchors()
    reg = np.zeros((1, 896, 16), np.float32)
    logits = np.full((1, 896, 1), -10.0, np.float32)
    kps = np.array([[0.4, 0.4], [0.6, 0.4], [0.5, 0.5], [0.5, 0.6], [0.3, 0.45], [0.7, 0.45]], np.float32)
    reg[0, 100] = _encode(anchors[100], (0.5, 0.5, 0.4, 0.5), kps)
    logits[0, 100] = 3.0
    logits[0, 700] = 1e6  # clipped at 100 before the sigmoid: no overflow, score 1
    boxes, scores, kp = decode(reg[0], logits[0], anchors)
    assert len(boxes) == 2
    i = int(np.argmin(scores))
    np.testing.assert_allclose(boxes[i], [0.3, 0.25, 0.7, 0.75], atol=1e-6)
    np.testing.assert_allclose(scores[i], 1 / (1 + np.exp(-3.0)), rtol=1e-6)
    np.testing.assert_allclose(kp[i], kps, atol=1e-6)
    assert scores.max() == pytest.approx(1.0)
    assert len(decode(reg[0], logits[0], anchors, DecodeConfig(score_threshold=0.99))[0]) == 1


def test_weighted_nms_blends_overlaps_and_keeps_separate_faces():
    boxes = np.array([[0, 0, 10, 10], [1, 0, 11, 10], [50, 50, 60, 60]], np.float32)
    scores = np.array([0.9, 0.6, 0.7], np.float32)
    kps = np.stack([np.full((6, 2), v, np.float32) for v in (0.0, 10.0, 55.0)])
    b, s, k = weighted_nms(boxes, scores, kps, 0.3)
    assert s.tolist() == pytest.approx([0.9, 0.7])
    np.testing.assert_allclose(b[0], [0.4, 0, 10.4, 10], rtol=1e-6)  # (0.9*0 + 0.6*1) / 1.5
    np.testing.assert_allclose(k[0], 4.0, rtol=1e-6)
    np.testing.assert_allclose(b[1], boxes[2])
    e = weighted_nms(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros((0, 6, 2), np.float32))
    assert [x.shape[0] for x in e] == [0, 0, 0]


def test_card_round_trip_and_license_beside_model():
    card = read_card(DEFAULT_DETECTOR)
    assert card is not None and card.task == "face-detect"
    assert card.input["mean"] == 127.5 and card.input["std"] == 127.5
    assert config_from_card(card.output) == DecodeConfig()
    assert config_from_card(card_output()) == DecodeConfig()
    assert (DEFAULT_DETECTOR.parent / "LICENSE-mediapipe.txt").read_text().startswith(("Apache", "\n", " "))
    assert "Apache" in (DEFAULT_DETECTOR.parent / "LICENSE-mediapipe.txt").read_text()[:2000]


def test_real_model_finds_the_astronaut(detector, photo):
    faces = detector.detect(photo)
    assert len(faces) == 1
    f = faces[0]
    assert f.score > 0.8 and f.box.iou(ASTRONAUT_FACE) > 0.6
    reye, leye, nose, mouth = (f.keypoint(n) for n in KEYPOINTS[:4])
    assert reye[0] < nose[0] < leye[0]  # subject's right eye is on the image's left
    assert max(reye[1], leye[1]) < nose[1] < mouth[1]
    assert all(ASTRONAUT_FACE.x1 - 10 < x < ASTRONAUT_FACE.x2 + 10 for x, _ in f.keypoints)


def test_keypoints_follow_rotation(detector, photo):
    f0 = detector.detect(photo)[0]
    for angle in (10, 25, -25):
        m = cv2.getRotationMatrix2D((220, 120), angle, 1.0)
        f1 = detector.detect(cv2.warpAffine(photo, m, (512, 512)))[0]
        expected = f0.keypoints[:4] @ m[:, :2].T + m[:, 2]
        assert np.abs(f1.keypoints[:4] - expected).max() < 10
        # OpenCV's positive angle turns the picture anticlockwise: the eye line's angle (y down) drops
        assert align.eye_angle_degrees(f1.keypoints) - align.eye_angle_degrees(f0.keypoints) == pytest.approx(-angle, abs=8)


def test_letterbox_maps_back_to_the_original_pixels(detector, photo):
    f0 = detector.detect(photo)[0]
    wide = cv2.copyMakeBorder(photo, 0, 0, 256, 0, cv2.BORDER_CONSTANT)  # 768x512: padded model input
    f1 = detector.detect(wide)[0]
    shifted = Box(f0.box.x1 + 256, f0.box.y1, f0.box.x2 + 256, f0.box.y2)
    assert f1.box.iou(shifted) > 0.6
    c0 = np.array([(shifted.x1 + shifted.x2) / 2, (shifted.y1 + shifted.y2) / 2])
    c1 = np.array([(f1.box.x1 + f1.box.x2) / 2, (f1.box.y1 + f1.box.y2) / 2])
    assert np.abs(c1 - c0).max() < 8
    # the face is 6x smaller in this model input: keypoints within ~2.5 input pixels
    assert np.abs(f1.keypoints[:4].mean(0) - (f0.keypoints[:4].mean(0) + [256, 0])).max() < 15


def test_refine_recovers_precise_keypoints_of_a_small_face(detector, photo):
    ref = detector.detect(photo)[0]
    wide = cv2.copyMakeBorder(photo, 128, 128, 128, 128, cv2.BORDER_CONSTANT)  # the face is 6x smaller in the input
    coarse = detector.detect(wide)[0]
    fine = detector.refine(wide, coarse)
    truth = ref.keypoints[:4] + 128
    err = lambda f: float(np.abs(f.keypoints[:4] - truth).mean())  # noqa: E731
    assert err(fine) < err(coarse) and err(fine) < 4
    assert fine.score == coarse.score and fine.box.iou(Box(ref.box.x1 + 128, ref.box.y1 + 128, ref.box.x2 + 128, ref.box.y2 + 128)) > 0.7
    assert detector.refine(np.zeros_like(wide), coarse) is coarse  # nothing there: unchanged


def test_no_face_in_noise(detector):
    noise = np.random.default_rng(0).integers(0, 256, (240, 320, 3), dtype=np.uint8)
    assert detector.detect(noise) == []


def test_similarity_recovers_known_transform():
    rng = np.random.default_rng(1)
    src = rng.uniform(0, 100, (5, 2))
    ang, s, t = 0.3, 1.7, np.array([12.0, -4.0])
    r = s * np.array([[np.cos(ang), -np.sin(ang)], [np.sin(ang), np.cos(ang)]])
    m = align.similarity(src, src @ r.T + t)
    np.testing.assert_allclose(m[:, :2], r, atol=1e-9)
    np.testing.assert_allclose(m[:, 2], t, atol=1e-9)
    with pytest.raises(ValueError):
        align.similarity(np.ones((3, 2)), np.zeros((3, 2)))


def test_blazeface_keypoints_land_on_the_template():
    tpl = align.template_pixels(align.BLAZEFACE_TEMPLATE)
    # keypoints of a face rotated by 30 degrees, scaled by 2.5 and shifted in a photo
    c, s = np.cos(0.5), np.sin(0.5)
    kps = np.vstack([tpl @ (2.5 * np.array([[c, -s], [s, c]])).T + [300, 120], np.zeros((2, 2))])
    m = align.blazeface_transform(kps)
    np.testing.assert_allclose(kps[:4] @ m[:, :2].T + m[:, 2], tpl - 0.5, atol=1e-9)
    assert np.hypot(m[0, 0], m[1, 0]) == pytest.approx(1 / 2.5)


def test_warp_chip_antialiases_large_faces(photo, detector):
    f = detector.detect(photo)[0]
    small = align.align_blazeface(photo, f.keypoints)
    big = cv2.resize(photo, None, fx=4, fy=4, interpolation=cv2.INTER_CUBIC)
    large = align.align_blazeface(big, f.keypoints * 4)
    assert small.shape == large.shape == (150, 150, 3)
    assert np.abs(small.astype(int) - large).mean() < 6


def test_pipeline_faces_embed_and_verdicts(pipeline, photo):
    faces = pipeline.faces(photo)
    assert len(faces) == 1 and faces[0].rejected is None
    chip = faces[0].chip
    assert chip.shape == (150, 150, 3) and chip.dtype == np.uint8
    vec = pipeline.embed(chip)
    assert vec.shape == (128,) and vec.dtype == np.float32 and 0.2 < np.linalg.norm(vec) < 2
    assert pipeline.metric == "euclidean" and 0.4 < pipeline.threshold < 0.8 and len(pipeline.model_id) == 64
    other = samples.variants(photo, 3, seed=5)[1:]
    dists = [pipeline.distance(vec, pipeline.embed_faces(img)[0][1]) for img in other]
    assert max(dists) < pipeline.threshold
    small = pipeline.faces(cv2.resize(photo, None, fx=0.4, fy=0.4, interpolation=cv2.INTER_AREA))  # a ~30 px face
    assert small and small[0].rejected.startswith("too small")
    assert pipeline.faces(cv2.GaussianBlur(photo, (0, 0), 1))[0].rejected is None
    blurred = pipeline.faces(cv2.GaussianBlur(photo, (0, 0), 3))
    assert blurred and blurred[0].rejected.startswith("blurred")
    assert set(pipeline.stats.stages) >= {"detect", "refine", "align", "embed"}
    with pytest.raises(ValueError, match="150x150x3"):
        pipeline.embed(np.zeros((112, 112, 3), np.uint8))


def test_pipeline_missing_model_is_a_clear_error(tmp_path):
    from sdk.errors import ModelFormatError

    with pytest.raises(ModelFormatError, match="not found"):
        FacePipeline(DEFAULT_DETECTOR, tmp_path / "nope.tflite")
    with pytest.raises(ModelFormatError, match="detector model not found"):
        FacePipeline(tmp_path / "nope.tflite", DEFAULT_MODEL)
    with pytest.raises(ModelFormatError, match="expected 'face-embed'"):
        FacePipeline(DEFAULT_DETECTOR, DEFAULT_DETECTOR)


def test_device_side_never_imports_tensorflow():
    code = ("import sys; sys.modules['tensorflow'] = None\n"
            "from sdk.face.pipeline import FacePipeline\nfrom sdk.face import samples\n"
            f"fp = FacePipeline({str(DEFAULT_DETECTOR)!r}, {str(DEFAULT_MODEL)!r}, threads=1)\n"
            f"f = fp.faces(samples.load_sample({str(SAMPLE_PHOTO)!r}))[0]\n"
            "print(fp.embed(f.chip).shape)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "(128,)" in out.stdout
    assert DEFAULT_MODEL.is_file()
