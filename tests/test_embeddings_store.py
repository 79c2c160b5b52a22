"""The SQLite face store: round trip, 0600 mode, refusal across models, atomic enrolment, identify."""

from __future__ import annotations

import os
import sqlite3
import stat
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from sdk.embeddings import EmbeddingStore, StoreError, default_db_path, distances

HASH_A, HASH_B = "a" * 64, "b" * 64


def unit(rng: np.random.Generator, n: int, d: int = 16) -> np.ndarray:
    v = rng.normal(size=(n, d)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def test_round_trip_and_reopen(tmp_path, rng):
    db = tmp_path / "faces.db"
    alice, bob = unit(rng, 3), unit(rng, 2)
    with EmbeddingStore(db, HASH_A, 16, model_name="m.tflite") as s:
        assert s.enroll("alice", alice, ["a1.jpg", "a2.jpg", "a3.jpg"]) == 3
        assert s.enroll("bob", bob) == 2
        assert s.enroll("alice", alice[:1]) == 4  # appending keeps the earlier embeddings
        s.set_threshold(0.55, "test")
    with EmbeddingStore(db, HASH_A, 16) as s:
        assert s.names() == ["alice", "bob"]
        assert [r["embeddings"] for r in s.identities()] == [4, 2]
        np.testing.assert_array_equal(s.embeddings_of("bob"), bob)
        assert s.threshold == pytest.approx(0.55) and s.calibrated
        m = s.identify(bob[1])
        assert (m.name, m.match) == ("bob", True) and m.distance == pytest.approx(0.0, abs=1e-3)
        assert s.remove("alice") == 4
        assert s.names() == ["bob"]
        assert s.identify(alice[0]).name in ("bob", None)
        with pytest.raises(StoreError, match="not enrolled"):
            s.remove("alice")


def test_other_connections_changes_are_seen(tmp_path, rng):
    """A camera loop's store sees an enrolment made by another process (connection) meanwhile."""
    db = tmp_path / "faces.db"
    a, b = unit(rng, 1), unit(rng, 1)
    with EmbeddingStore(db, HASH_A, 16) as loop, EmbeddingStore(db, HASH_A, 16) as other:
        loop.enroll("alice", a)
        assert loop.identify(b[0], threshold=0.1).name is None
        other.enroll("bob", b)
        assert loop.identify(b[0], threshold=0.1).name == "bob"
        other.remove("bob")
        assert loop.identify(b[0], threshold=0.1).name is None


def test_created_owner_only_even_with_permissive_umask(tmp_path):
    old = os.umask(0)
    try:
        db = tmp_path / "new" / "faces.db"
        EmbeddingStore(db, HASH_A, 8).close()
    finally:
        os.umask(old)
    assert stat.S_IMODE(db.stat().st_mode) == 0o600
    assert stat.S_IMODE(db.parent.stat().st_mode) == 0o700


def test_default_path_follows_xdg(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path))
    assert default_db_path() == tmp_path / "edgesdk" / "faces.db"


def test_other_model_or_dimension_is_refused(tmp_path, rng):
    db = tmp_path / "faces.db"
    with EmbeddingStore(db, HASH_A, 16, model_name="old.tflite") as s:
        s.enroll("alice", unit(rng, 1))
    with pytest.raises(StoreError, match=r"old\.tflite.*distances across models mean nothing"):
        EmbeddingStore(db, HASH_B, 16, model_name="new.tflite")
    with pytest.raises(StoreError, match="16-d"):
        EmbeddingStore(db, HASH_A, 32)
    with EmbeddingStore(db, None) as s:  # listing needs no model
        assert s.names() == ["alice"]


def test_bad_inputs(tmp_path, rng):
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StoreError, match="not an edgesdk face database"):
        EmbeddingStore(junk, HASH_A, 16)
    with pytest.raises(StoreError, match="no face database"):
        EmbeddingStore(tmp_path / "missing.db", None)
    with EmbeddingStore(tmp_path / "f.db", HASH_A, 16) as s:
        with pytest.raises(StoreError, match="no enrolled identity"):
            s.identify(unit(rng, 1)[0])
        with pytest.raises(StoreError, match=r"shape \(N, 16\)"):
            s.enroll("x", unit(rng, 2, 8))
        with pytest.raises(StoreError, match="finite"):
            s.enroll("x", np.full((1, 16), np.nan, np.float32))
        s.enroll("alice", unit(rng, 1))
        with pytest.raises(StoreError, match="did you mean 'alice'"):
            s.verify("alicia", unit(rng, 1)[0])
        assert s.names() == ["alice"]


def test_killed_mid_enrolment_leaves_nothing(tmp_path, rng):
    """A child process is SIGKILLed in the middle of an enrolment's INSERTs: no half identity survives."""
    db = tmp_path / "faces.db"
    with EmbeddingStore(db, HASH_A, 16) as s:
        s.enroll("alice", unit(rng, 2))
    code = textwrap.dedent(f"""
        import os, signal, numpy as np
        from sdk.embeddings import EmbeddingStore
        s = EmbeddingStore({str(db)!r}, {HASH_A!r}, 16)
        n = [0]
        def trace(stmt):
            if stmt.startswith("INSERT INTO embeddings"):
                n[0] += 1
                if n[0] == 50:
                    os.kill(os.getpid(), signal.SIGKILL)
        s._db.set_trace_callback(trace)
        s.enroll("mallory", np.ones((200, 16), np.float32) / 4.0)
        s.enroll("alice", np.ones((200, 16), np.float32) / 4.0)
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=120)
    assert proc.returncode == -9, proc.stderr.decode()[-2000:]
    with EmbeddingStore(db, HASH_A, 16) as s:
        assert s.names() == ["alice"]
        assert [r["embeddings"] for r in s.identities()] == [2]
    con = sqlite3.connect(db)
    assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert con.execute("SELECT COUNT(*) FROM embeddings").fetchone()[0] == 2


@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
def test_identify_matches_brute_force(tmp_path, rng, metric):
    vecs = unit(rng, 3000, 32) * rng.uniform(0.5, 2.0, size=(3000, 1)).astype(np.float32)
    names = [f"p{i % 150:03d}" for i in range(3000)]
    with EmbeddingStore(tmp_path / "f.db", HASH_A, 32, metric=metric, default_threshold=10.0) as s:
        s.enroll_many({n: vecs[[i for i, m in enumerate(names) if m == n]] for n in sorted(set(names))})
        for q in unit(rng, 25, 32):
            if metric == "cosine":
                ref = 1 - (vecs @ q) / (np.linalg.norm(vecs, axis=1) * np.linalg.norm(q))
            else:
                ref = np.sqrt(((vecs.astype(np.float64) - q) ** 2).sum(axis=1))
            k = int(np.argmin(ref))
            m = s.identify(q)
            assert m.name == names[k]
            assert m.distance == pytest.approx(ref[k], abs=1e-4)
            v = s.verify(names[k], q)
            assert v.distance == pytest.approx(ref[k], abs=1e-4) and v.match
        assert s.identify(vecs[0], threshold=-1.0).name is None  # beyond the threshold: nobody


def test_distances_euclidean_trick_is_accurate(rng):
    m = unit(rng, 100, 128)
    q = m[7] + 1e-3
    d = distances(m, q, "euclidean")
    np.testing.assert_allclose(d, np.linalg.norm(m - q, axis=1), atol=2e-3)
