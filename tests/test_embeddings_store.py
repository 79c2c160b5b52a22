"""The SQLite face store: round trip, 0600 mode, refusal across models, atomic enrolment, identify."""

from __future__ import annotations

import os
import sqlite3
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

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


def test_created_owner_only_even_with_permissive_umask(tmp_path, rng):
    old = os.umask(0)
    try:
        db = tmp_path / "new" / "faces.db"
        with EmbeddingStore(db, HASH_A, 8) as s:
            assert not db.exists()  # created by the first write, not by opening
            s.enroll("alice", unit(rng, 1, 8))
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


# --- file safety: foreign files, stamps, permissions, read-only places --------------------------------------------------

def foreign_dbs(tmp_path) -> dict[str, Path]:
    """SQLite files of other applications, one of them using edgesdk's very table names."""
    out = {}
    specs = {
        "app.db": ["CREATE TABLE users (id INTEGER PRIMARY KEY, email TEXT)", "INSERT INTO users VALUES (1, 'a@example.com')"],
        "stamped.db": ["PRAGMA application_id = 305419896", "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
                       "CREATE TABLE identities (id INTEGER PRIMARY KEY)", "CREATE TABLE embeddings (id INTEGER PRIMARY KEY)"],
        "versioned.db": ["PRAGMA user_version = 7", "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)"],
        "extra.db": ["CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)", "CREATE TABLE orders (id INTEGER)"],
    }
    for name, stmts in specs.items():
        (tmp_path / name.removesuffix(".db")).mkdir(mode=0o700)
        p = tmp_path / name.removesuffix(".db") / name
        con = sqlite3.connect(p)
        for stmt in stmts:
            con.execute(stmt)
        con.commit()
        con.close()
        os.chmod(p, 0o600)
        out[name] = p
    return out


def snapshot(p: Path) -> tuple:
    return p.read_bytes(), stat.S_IMODE(p.stat().st_mode), sorted(x.name for x in p.parent.iterdir())


def test_foreign_sqlite_files_are_refused_untouched(tmp_path, rng, capsys):
    from cli import main

    for name, p in foreign_dbs(tmp_path).items():
        before = snapshot(p)
        for model_hash in (HASH_A, None):
            with pytest.raises(StoreError, match="not an edgesdk face database.*nothing was changed") as e:
                EmbeddingStore(p, model_hash, 16)
            assert len(str(e.value).splitlines()) == 1
        for argv in (["face", "list", "--db", str(p)], ["face", "remove", "alice", "--db", str(p)]):
            assert main(argv) == 2, name
            err = capsys.readouterr().err.strip().splitlines()
            assert len(err) == 1 and err[0].startswith("edgesdk: error:") and "another application" in err[0], err
        assert snapshot(p) == before, f"{name} changed"


def legacy_store(path: Path, dim: int = 16) -> None:
    """A store as edgesdk wrote it before the application_id stamp: the same tables and meta, nothing in the header."""
    from sdk.embeddings import SCHEMA

    con = sqlite3.connect(path)
    con.executescript(SCHEMA)
    con.executemany("INSERT INTO meta VALUES (?, ?)", [("model_hash", HASH_A), ("model_name", "m.tflite"), ("dim", str(dim)),
                                                       ("metric", "euclidean"), ("default_threshold", "0.6"), ("created", "0")])
    con.execute("INSERT INTO identities (name, created, updated) VALUES ('old', 0, 0)")
    con.execute("INSERT INTO embeddings (identity_id, vector, source, created) VALUES (1, ?, '', 0)", (np.ones(dim, np.float32).tobytes(),))
    con.commit()
    con.close()
    os.chmod(path, 0o600)


def header(path: Path) -> tuple[int, int]:
    con = sqlite3.connect(path)
    try:
        return con.execute("PRAGMA application_id").fetchone()[0], con.execute("PRAGMA user_version").fetchone()[0]
    finally:
        con.close()


def test_earlier_stores_keep_working_and_are_stamped_on_first_write(tmp_path, rng):
    from sdk.embeddings import APPLICATION_ID, SCHEMA_VERSION

    db = tmp_path / "faces.db"
    legacy_store(db)
    raw = db.read_bytes()
    with EmbeddingStore(db, HASH_A, 16) as s:
        assert s.names() == ["old"] and s.identify(np.ones(16, np.float32)).name == "old"
    with EmbeddingStore(db, None) as s:
        assert s.identities()[0]["embeddings"] == 1
    assert db.read_bytes() == raw  # reading stamps nothing
    with EmbeddingStore(db, HASH_A, 16) as s:
        s.enroll("new", unit(rng, 1))
    assert header(db) == (APPLICATION_ID, SCHEMA_VERSION)
    with EmbeddingStore(db, HASH_A, 16) as s:
        assert s.names() == ["new", "old"]
    fresh = tmp_path / "fresh.db"
    with EmbeddingStore(fresh, HASH_A, 16) as s:
        s.enroll("a", unit(rng, 1))
    assert header(fresh) == (APPLICATION_ID, SCHEMA_VERSION)


def test_store_of_a_newer_edgesdk_is_refused(tmp_path, rng):
    db = tmp_path / "faces.db"
    with EmbeddingStore(db, HASH_A, 16) as s:
        s.enroll("a", unit(rng, 1))
    con = sqlite3.connect(db)
    con.execute("PRAGMA user_version = 99")
    con.close()
    with pytest.raises(StoreError, match="newer edgesdk"):
        EmbeddingStore(db, HASH_A, 16)


def test_wide_permissions_are_tightened_and_said_once(tmp_path, rng, caplog):
    folder = tmp_path / "faces"
    db = folder / "faces.db"
    with EmbeddingStore(db, HASH_A, 16) as s:
        s.enroll("a", unit(rng, 1))
    os.chmod(folder, 0o755)
    with caplog.at_level("WARNING", logger="edgesdk"):
        for _ in range(3):  # widened again each time: tightened each time, said once per process
            os.chmod(db, 0o644)
            EmbeddingStore(db, HASH_A, 16).close()
    said = [r.getMessage() for r in caplog.records if "face database" in r.getMessage()]
    assert len(said) == 2 and any("folder" in m and "0755" in m for m in said) and any("file" in m and "0644" in m for m in said), said
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700 and stat.S_IMODE(db.stat().st_mode) == 0o600
    # a folder the database shares with other files is not closed (others use it), only warned about
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o755)
    os.chmod(shared, 0o755)
    (shared / "notes.txt").write_text("x")
    with caplog.at_level("WARNING", logger="edgesdk"), EmbeddingStore(shared / "faces.db", HASH_A, 16) as s:
        s.enroll("a", unit(rng, 1))
    assert stat.S_IMODE(shared.stat().st_mode) == 0o755 and stat.S_IMODE((shared / "faces.db").stat().st_mode) == 0o600
    assert any(f"folder {shared} has mode 0755" in r.getMessage() for r in caplog.records)


def test_failed_enrolment_leaves_no_new_file(tmp_path, rng):
    db = tmp_path / "faces.db"
    with EmbeddingStore(db, HASH_A, 16) as s:
        with pytest.raises(StoreError):
            s.enroll("x", unit(rng, 2, 8))  # wrong dimension: refused before any write
        assert not db.exists()
        with pytest.raises(KeyboardInterrupt):  # interrupted inside the first transaction
            with s._tx():
                s._db.execute("INSERT INTO identities (name, created, updated) VALUES ('x', 0, 0)")
                raise KeyboardInterrupt
        assert list(tmp_path.iterdir()) == []
        assert s.names() == []
        s.enroll("y", unit(rng, 1))  # and the store still works afterwards
        assert s.names() == ["y"]


def test_failed_enrolment_from_the_cli_leaves_no_file(tmp_path, capsys):
    from cli import main

    db = tmp_path / "sub" / "faces.db"
    assert main(["face", "enroll", "bob", str(tmp_path / "missing.jpg"), "--db", str(db)]) == 2
    assert "edgesdk: error:" in capsys.readouterr().err
    assert not db.exists()


def as_unprivileged(argv: list[str]) -> list[str]:
    """``argv`` run so that file permissions apply: as root, without the capabilities that bypass them."""
    if os.geteuid() != 0:
        return argv
    import shutil

    if not shutil.which("setpriv"):
        pytest.skip("running as root without setpriv: file permissions cannot be enforced")
    return ["setpriv", "--bounding-set=-dac_override,-dac_read_search,-fowner", "--inh-caps=-all", *argv]


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(as_unprivileged([sys.executable, "-m", "cli", *args]), capture_output=True, text=True, timeout=120)


def test_read_only_folder_or_file_is_one_line(tmp_path, rng):
    ro_dir = tmp_path / "ro"
    ro_dir.mkdir()
    db = ro_dir / "faces.db"
    with EmbeddingStore(db, HASH_A, 16) as s:
        s.enroll("alice", unit(rng, 1))
        s.enroll("bob", unit(rng, 1))
    os.chmod(db, 0o600)
    os.chmod(ro_dir, 0o500)  # the file is writable, its folder (where SQLite's journal goes) is not
    try:
        for db_path, verb in ((ro_dir / "new.db", "create"), (db, "write")):
            code = textwrap.dedent(f"""
                import numpy as np
                from sdk.embeddings import EmbeddingStore, StoreError
                try:
                    with EmbeddingStore({str(db_path)!r}, {HASH_A!r}, 16) as s:
                        s.enroll("carol", np.ones((1, 16), np.float32))
                except StoreError as e:
                    print(e)
            """)
            proc = subprocess.run(as_unprivileged([sys.executable, "-c", code]), capture_output=True, text=True, timeout=120)
            assert proc.returncode == 0 and not proc.stderr, proc.stderr[-2000:]
            assert f"cannot {verb} the face database" in proc.stdout and len(proc.stdout.splitlines()) == 1, proc.stdout
        proc = run_cli("face", "remove", "bob", "--db", str(db))
        assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
        assert proc.stderr.strip().splitlines()[-1].startswith("edgesdk: error:") and "cannot write" in proc.stderr
        assert run_cli("face", "list", "--db", str(db), "--json").returncode == 0  # reading needs no write access
        os.chmod(ro_dir, 0o700)
        os.chmod(db, 0o400)  # now the file itself is read-only
        proc = run_cli("face", "remove", "bob", "--db", str(db))
        assert proc.returncode == 2 and "Traceback" not in proc.stderr and "cannot write" in proc.stderr, proc.stderr[-2000:]
    finally:
        os.chmod(ro_dir, 0o700)
    with EmbeddingStore(db, None) as s:
        assert s.names() == ["alice", "bob"]


def test_crashed_write_with_a_hot_journal_is_recovered(tmp_path, rng):
    """A write that spilled pages into the file before SIGKILL leaves a hot journal: the next open rolls it back."""
    db = tmp_path / "faces.db"
    with EmbeddingStore(db, HASH_A, 16) as s:
        s.enroll("alice", unit(rng, 2))
    code = textwrap.dedent(f"""
        import os, signal, numpy as np
        from sdk.embeddings import EmbeddingStore
        s = EmbeddingStore({str(db)!r}, {HASH_A!r}, 16)
        s.enroll("bob", np.ones((1, 16), np.float32))
        s._db.execute("PRAGMA cache_size = 2")  # spill to the file mid-transaction
        s._db.set_trace_callback(lambda stmt: stmt.startswith("INSERT INTO embeddings") and os.path.getsize({str(db)!r}) > 200_000
                                 and os.kill(os.getpid(), signal.SIGKILL))
        s.enroll("mallory", np.ones((5000, 16), np.float32))
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=120)
    assert proc.returncode == -9, proc.stderr.decode()[-2000:]
    assert (tmp_path / "faces.db-journal").stat().st_size > 0
    with EmbeddingStore(db, HASH_A, 16) as s:
        assert s.names() == ["alice", "bob"]
