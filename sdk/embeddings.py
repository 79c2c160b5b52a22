"""A SQLite store of face embeddings: identities, several embeddings each, one model.

The file holds biometric data, so it is created with mode 0600 (and its folder 0700)
before SQLite opens it, by the first write (a failed enrolment leaves no file); an existing
file or folder open to others is tightened, with one warning. Every store carries edgesdk's
``application_id`` in its SQLite header: another application's SQLite file is refused before
anything is written to it, and a store of an earlier edgesdk (its tables, no stamp) is stamped
by its first write. Every embedding in a store comes from the same embedding model,
recorded by the SHA-256 of its ``.tflite``: opening the store with another model is
refused, because distances between two models' embeddings mean nothing. Enrolment is one
transaction, so a crash never leaves a half-enrolled identity. ``identify`` keeps every
embedding in one float32 matrix in memory and compares with a single matrix-vector
product (see ``benchmarks/face_identify.py`` for the speed against N).
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import stat
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sdk.errors import EdgeSDKError

log = logging.getLogger("edgesdk")

METRICS = ("euclidean", "cosine")
APPLICATION_ID = 0x45445346  # "EDSF", edgesdk face store: PRAGMA application_id, in the SQLite header of every store
SCHEMA_VERSION = 1  # PRAGMA user_version
TABLES = {"meta", "identities", "embeddings"}
SIDE_FILES = ("-journal", "-wal", "-shm")  # SQLite's own files beside a database
_WARNED: set[str] = set()
SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS identities (
    id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE, created REAL NOT NULL, updated REAL NOT NULL);
CREATE TABLE IF NOT EXISTS embeddings (
    id INTEGER PRIMARY KEY,
    identity_id INTEGER NOT NULL REFERENCES identities(id) ON DELETE CASCADE,
    vector BLOB NOT NULL, source TEXT, created REAL NOT NULL);
CREATE INDEX IF NOT EXISTS embeddings_identity ON embeddings(identity_id);
"""


class StoreError(EdgeSDKError, ValueError):
    """The embedding store is unusable: another model's, wrong dimension, unknown name, empty."""


@dataclass(frozen=True)
class Match:
    """The nearest stored identity to a query embedding."""

    name: str | None
    distance: float
    match: bool
    threshold: float

    def to_json(self) -> dict:
        return {"name": self.name, "match": self.match, "distance": round(self.distance, 4), "threshold": round(self.threshold, 4)}


def default_db_path() -> Path:
    """``$XDG_DATA_HOME/edgesdk/faces.db``, or ``~/.local/share/edgesdk/faces.db``."""
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return Path(base) / "edgesdk" / "faces.db"


def _create_private(path: Path) -> bool:
    """Create ``path`` (and its folder) readable by the owner only, before SQLite touches it.

    Returns:
        True when this call created the file (so a failed first write may remove it again).

    Raises:
        StoreError: The folder or file cannot be created (read-only place, no permission).
    """
    try:
        if not path.parent.exists():
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    except FileExistsError:
        return False
    except OSError as e:
        raise StoreError(f"{path}: cannot create the face database ({e.strerror or e}); choose a folder you can write") from e
    os.close(fd)
    os.chmod(path, 0o600)  # the umask may have removed bits, never added: make it exact
    return True


def _warn_once(key: str, message: str, *args: object) -> None:
    if key not in _WARNED:
        _WARNED.add(key)
        log.warning(message, *args)


def _dedicated(folder: Path, db: Path) -> bool:
    """True for edgesdk's own data folder, or a folder holding only this database (and SQLite's side files).

    Only such a folder is chmod-ed: closing a shared one (``/var/lib``, a project folder) would break other users of it.
    """
    if folder == default_db_path().parent:
        return True
    ours = {db.name, *(db.name + s for s in SIDE_FILES)}
    try:
        with os.scandir(folder) as it:
            names = [entry.name for _, entry in zip(range(8), it)]
    except OSError:
        return False
    return len(names) < 8 and set(names) <= ours


def _tighten(db: Path) -> None:
    """Warn (once per path) about a database or folder that others may read, and make them owner-only where that is safe."""
    for p, kind in ((db.parent, "folder"), (db, "file")):
        try:
            st = p.stat()
        except OSError:
            continue
        mode = stat.S_IMODE(st.st_mode)
        if not mode & 0o077:
            continue
        key = f"{kind}:{p.resolve()}"
        if st.st_uid != os.geteuid() or (kind == "folder" and not _dedicated(p, db)):
            _warn_once(key, "face database %s %s has mode %04o (others may read or replace biometric data); "
                       "keep it in a private folder (chmod 700)", kind, p, mode)
            continue
        try:
            os.chmod(p, mode & 0o700)
        except OSError as e:
            _warn_once(key, "face database %s %s has mode %04o and cannot be tightened (%s)", kind, p, mode, e.strerror or e)
        else:
            _warn_once(key, "face database %s %s had mode %04o (others could read biometric data); made it %04o", kind, p, mode, mode & 0o700)


def _classify(con: sqlite3.Connection | None, path: Path, app_id: int | None = None, version: int = 0) -> str:
    """``new`` (no tables), ``ours`` (stamped by edgesdk) or ``legacy`` (edgesdk's tables, not stamped yet).

    ``app_id``/``version`` come from the header when ``con`` is None (a stamped file needs no connection).

    Raises:
        StoreError: Another application's database, or one from a newer edgesdk.
    """
    if con is not None:
        app_id, version = (con.execute(f"PRAGMA {k}").fetchone()[0] for k in ("application_id", "user_version"))
    if app_id == APPLICATION_ID:
        if version > SCHEMA_VERSION:
            raise StoreError(f"{path}: a face database of a newer edgesdk (format {version}, this one reads {SCHEMA_VERSION}); upgrade edgesdk")
        return "ours"
    tables = set() if con is None else {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'")}
    if con is not None and app_id == 0 and version == 0 and (not tables or ("meta" in tables and tables <= TABLES)):
        return "legacy" if tables else "new"
    raise StoreError(f"{path}: not an edgesdk face database (another application's SQLite file: application_id {app_id:#x}"
                     + (f", tables {', '.join(sorted(tables)[:5]) or 'none'}" if con is not None else "") + "); nothing was changed, choose another path")


def _inspect(path: Path) -> str:
    """Classify an existing file without writing anything to it: its header bytes, then a read-only connection if unstamped."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(100)
    except OSError as e:
        raise StoreError(f"{path}: cannot read the face database ({e.strerror or e}); check its permissions") from e
    if not head:
        return "new"  # made by _create_private by a run that stopped before its first write
    if len(head) < 100 or not head.startswith(b"SQLite format 3\0"):
        raise StoreError(f"{path}: not an edgesdk face database (not an SQLite file); nothing was changed, choose another path")
    app_id, version = (int.from_bytes(head[i:i + 4], "big", signed=True) for i in (68, 60))
    if app_id != 0:  # stamped (ours, or another application's): the header says all, a crashed write's journal waits for the rw connection
        return _classify(None, path, app_id, version)
    try:
        con = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
        try:
            return _classify(con, path)
        finally:
            con.close()
    except sqlite3.DatabaseError as e:
        raise StoreError(f"{path}: not an edgesdk face database ({e}); nothing was changed, choose another path") from e


def distances(matrix: np.ndarray, query: np.ndarray, metric: str, sq_norms: np.ndarray | None = None) -> np.ndarray:
    """Distances from ``query`` (D,) to every row of ``matrix`` (N, D), vectorised.

    Euclidean uses ``|a|^2 + |b|^2 - 2 a.b`` (one matrix-vector product); cosine distance
    is ``1 - cos``.
    """
    q = np.asarray(query, dtype=np.float32).ravel()
    dots = matrix @ q
    if metric == "cosine":
        norms = np.sqrt(sq_norms if sq_norms is not None else np.einsum("ij,ij->i", matrix, matrix))
        return 1.0 - dots / np.maximum(norms * float(np.linalg.norm(q)), 1e-12)
    sq = sq_norms if sq_norms is not None else np.einsum("ij,ij->i", matrix, matrix)
    d2 = sq - 2.0 * dots + float(q @ q)
    return np.sqrt(np.maximum(d2, 0.0))


class EmbeddingStore:
    """Identities and their embeddings in one SQLite file, tied to one embedding model.

    The file is created (0600, stamped with edgesdk's ``application_id``) by the first
    write, so a failed enrolment leaves no empty database behind. An existing file is
    classified before anything is written to it: another application's SQLite file is
    refused untouched; a store of an earlier edgesdk (its tables, no stamp) is stamped by
    its first write.

    Args:
        path: The database file.
        model_hash: SHA-256 (hex) of the embedding model the vectors come from. A store
            made with another model is refused. ``None`` opens an existing store for
            listing and removal without a model.
        dim: Embedding size; checked against the store (ignored when ``model_hash`` is None).
        metric: ``euclidean`` or ``cosine``; fixed when the store is created.
        default_threshold: The model's threshold, used until ``calibrate`` stores one.
        model_name: Shown in error messages.

    Raises:
        StoreError: If the file belongs to another model, dimension or application, or cannot be read.
    """

    def __init__(self, path: str | Path, model_hash: str | None, dim: int = 0, metric: str = "euclidean",
                 default_threshold: float = 0.6, model_name: str = "") -> None:
        if metric not in METRICS:
            raise StoreError(f"unknown distance metric {metric!r}; expected one of {METRICS}")
        self.path = Path(path)
        if model_hash is None and not self.path.is_file():
            raise StoreError(f"{self.path}: no face database here; enroll someone first or give another database (`db`)", param="db")
        self._model = (model_hash, dim, model_name)
        self._new_meta = {"model_hash": model_hash or "", "model_name": model_name, "dim": str(dim), "metric": metric,
                          "default_threshold": repr(float(default_threshold))}
        self._db: sqlite3.Connection | None = None
        self._ready = False  # our tables exist and carry the stamp
        self._cache: tuple[np.ndarray, np.ndarray, np.ndarray, list[str]] | None = None
        self._version = -1
        try:
            meta = self._attach() if self.path.exists() else {}
        except BaseException:
            self.close()
            raise
        if model_hash is None and "dim" not in meta:
            self.close()
            raise StoreError(f"{self.path}: an empty face database; enroll someone first")
        meta = meta or self._new_meta
        self.metric = meta["metric"]
        self.dim = int(meta["dim"])
        self._default_threshold = float(meta.get("default_threshold", default_threshold))

    def _attach(self) -> dict[str, str]:
        """Open the existing file (refusing a foreign one untouched); its meta, or {} while it holds no store yet."""
        state = _inspect(self.path)
        _tighten(self.path)
        try:
            self._connect()
            meta = dict(self._db.execute("SELECT key, value FROM meta").fetchall()) if state != "new" else {}
        except sqlite3.DatabaseError as e:
            self.close()
            raise StoreError(f"{self.path}: cannot read the face database ({e}); check the file and its permissions") from e
        self._ready = state == "ours" and bool(meta)
        if meta and self._model[0] is not None:
            self._check(meta, *self._model)
        return meta

    def _connect(self) -> None:
        self._db = sqlite3.connect(str(self.path), isolation_level=None, timeout=10.0)
        self._db.execute("PRAGMA foreign_keys = ON")

    def _check(self, meta: dict[str, str], model_hash: str, dim: int, model_name: str) -> None:
        if meta.get("model_hash") != model_hash:
            other = meta.get("model_name") or "another model"
            raise StoreError(
                f"{self.path} holds embeddings from {other} (sha256 {meta.get('model_hash', '?')[:12]}), not from "
                f"{model_name or 'this model'} (sha256 {model_hash[:12]}); distances across models mean nothing: "
                f"pass the model it was made with, or another database (`db`) and enroll again", param="db")
        if int(meta.get("dim", -1)) != dim:
            raise StoreError(f"{self.path}: stored embeddings are {meta.get('dim')}-d, the model gives {dim}-d")

    def _prepare(self) -> None:
        """Inside the first write transaction: check the file again, create the tables, stamp, record the model."""
        assert self._db is not None
        state = _classify(self._db, self.path)
        for stmt in SCHEMA.split(";"):
            if stmt.strip():
                self._db.execute(stmt)
        if state != "ours":
            self._db.execute(f"PRAGMA application_id = {APPLICATION_ID}")
            self._db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        meta = dict(self._db.execute("SELECT key, value FROM meta").fetchall())
        if not meta:
            if self._model[0] is None:
                raise StoreError(f"{self.path}: an empty face database; enroll someone first")
            self._db.executemany("INSERT INTO meta VALUES (?, ?)", [*self._new_meta.items(), ("created", repr(time.time()))])
        elif self._model[0] is not None:
            self._check(meta, *self._model)

    @contextlib.contextmanager
    def _tx(self) -> Iterator[None]:
        """``BEGIN IMMEDIATE`` ... ``COMMIT``; ``ROLLBACK`` on any exception, Ctrl-C included.

        The first write creates the file; if that transaction fails, the new file goes again.
        """
        created = False
        if self._db is None:
            created = _create_private(self.path)
            if not created:
                self._attach()
            else:
                _tighten(self.path)  # the folder may have existed, open to others
                self._connect()
        assert self._db is not None
        try:
            self._db.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as e:
            self._discard(created)
            raise self._write_error(e) from e
        try:
            if not self._ready:
                self._prepare()
            yield
            self._db.execute("COMMIT")
        except BaseException as e:
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
            self._discard(created)
            if isinstance(e, sqlite3.Error):
                raise self._write_error(e) from e
            raise
        self._ready = True

    def _write_error(self, e: sqlite3.Error) -> StoreError:
        if getattr(e, "sqlite_errorname", "") in ("SQLITE_BUSY", "SQLITE_LOCKED") or "locked" in str(e):
            return StoreError(f"{self.path}: database busy ({e}); another edgesdk process is writing, try again")
        return StoreError(f"{self.path}: cannot write the face database ({e}); check that the file and its folder are writable")

    def _discard(self, created: bool) -> None:
        """Remove the file this store just created when its first transaction failed (it holds nothing)."""
        if created and self.path.stat().st_size == 0:
            self.close()
            for p in (self.path, *(Path(f"{self.path}{s}") for s in SIDE_FILES)):
                p.unlink(missing_ok=True)

    def _rows(self, sql: str, args: Sequence[object] = ()) -> list[tuple]:
        """Rows of a read; none while the database does not exist or holds no store yet."""
        if self._db is None:
            if not (self.path.is_file() and self.path.stat().st_size):
                return []
            self._attach()  # another process created it since
        assert self._db is not None
        if not self._ready and self._db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'embeddings'").fetchone() is None:
            return []
        return self._db.execute(sql, args).fetchall()

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    def __enter__(self) -> EmbeddingStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- settings -------------------------------------------------------------------------
    def _meta(self, key: str) -> str | None:
        rows = self._rows("SELECT value FROM meta WHERE key = ?", (key,))
        return rows[0][0] if rows else None

    @property
    def threshold(self) -> float:
        """The calibrated threshold if ``calibrate`` stored one, else the model's default."""
        v = self._meta("threshold")
        return float(v) if v is not None else self._default_threshold

    @property
    def calibrated(self) -> bool:
        return self._meta("threshold") is not None

    def set_threshold(self, value: float, info: str = "") -> None:
        """Store a calibrated threshold (and a note on how it was obtained)."""
        with self._tx():
            self._db.execute("INSERT OR REPLACE INTO meta VALUES ('threshold', ?)", (repr(float(value)),))
            self._db.execute("INSERT OR REPLACE INTO meta VALUES ('threshold_info', ?)", (info,))

    # --- writing --------------------------------------------------------------------------
    def enroll(self, name: str, vectors: np.ndarray, sources: Sequence[str] | None = None) -> int:
        """Add ``vectors`` (N, D) to ``name`` (created if new) in one transaction.

        Returns:
            The number of embeddings ``name`` now has.

        Raises:
            StoreError: On an empty name, no vectors, or the wrong dimension.
        """
        return self.enroll_many({name: (vectors, sources)})[name]

    def enroll_many(self, items: Mapping[str, np.ndarray | tuple[np.ndarray, Sequence[str] | None]]) -> dict[str, int]:
        """Add several identities' embeddings in ONE transaction (all or nothing).

        Args:
            items: name -> vectors (N, D), or name -> (vectors, sources).

        Returns:
            name -> the number of embeddings it now has.
        """
        checked = {name: self._checked(name, *(v if isinstance(v, tuple) else (v, None))) for name, v in items.items()}
        now = time.time()
        counts = {}
        with self._tx():
            for name, (v, srcs) in checked.items():
                self._db.execute("INSERT INTO identities (name, created, updated) VALUES (?, ?, ?) "
                                 "ON CONFLICT(name) DO UPDATE SET updated = excluded.updated", (name, now, now))
                (ident,) = self._db.execute("SELECT id FROM identities WHERE name = ?", (name,)).fetchone()
                self._db.executemany("INSERT INTO embeddings (identity_id, vector, source, created) VALUES (?, ?, ?, ?)",
                                     ((ident, row.tobytes(), src, now) for row, src in zip(v, srcs)))
                (counts[name],) = self._db.execute("SELECT COUNT(*) FROM embeddings WHERE identity_id = ?", (ident,)).fetchone()
        self._cache = None
        return counts

    def _checked(self, name: str, vectors: np.ndarray, sources: Sequence[str] | None) -> tuple[np.ndarray, list[str]]:
        v = np.asarray(vectors, dtype=np.float32)
        if v.ndim == 1:
            v = v[None]
        if not name or not name.strip():
            raise StoreError("enroll needs a non-empty NAME")
        if v.ndim != 2 or v.shape[0] == 0 or v.shape[1] != self.dim or not np.isfinite(v).all():
            raise StoreError(f"enroll {name!r}: expected finite embeddings of shape (N, {self.dim}), got {v.shape}")
        srcs = list(sources) if sources is not None else [""] * len(v)
        if len(srcs) != len(v):
            raise StoreError(f"enroll {name!r}: {len(v)} embeddings but {len(srcs)} sources")
        return v, srcs

    def remove(self, name: str) -> int:
        """Delete ``name`` and its embeddings; returns how many embeddings went.

        Raises:
            StoreError: If ``name`` is not enrolled.
        """
        with self._tx():
            row = self._db.execute("SELECT id FROM identities WHERE name = ?", (name,)).fetchone()
            if row is None:
                raise StoreError(self._unknown(name))
            (count,) = self._db.execute("SELECT COUNT(*) FROM embeddings WHERE identity_id = ?", row).fetchone()
            self._db.execute("DELETE FROM embeddings WHERE identity_id = ?", row)
            self._db.execute("DELETE FROM identities WHERE id = ?", row)
        self._cache = None
        return int(count)

    # --- reading --------------------------------------------------------------------------
    def names(self) -> list[str]:
        return [r[0] for r in self._rows("SELECT name FROM identities ORDER BY name")]

    def identities(self) -> list[dict]:
        """One dict per identity: ``name``, ``embeddings``, ``created``, ``updated`` (Unix time)."""
        rows = self._rows("SELECT i.name, COUNT(e.id), i.created, i.updated FROM identities i "
                          "LEFT JOIN embeddings e ON e.identity_id = i.id GROUP BY i.id ORDER BY i.name")
        return [{"name": n, "embeddings": c, "created": cr, "updated": up} for n, c, cr, up in rows]

    def require_enrolled(self) -> None:
        """Raise StoreError (saying how to enrol) when the store holds nobody."""
        if not self.names():
            raise StoreError(self._unknown(""))

    def _unknown(self, name: str) -> str:
        names = self.names()
        if not names:
            return f"{self.path} has no enrolled identity; run `edgesdk face enroll NAME IMAGE...` first"
        import difflib

        close = difflib.get_close_matches(name, names, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else f"; enrolled: {', '.join(names[:10])}"
        return f"{name!r} is not enrolled in {self.path}{hint}"

    def matrix(self) -> tuple[np.ndarray, np.ndarray, list[str]]:
        """All embeddings (N, D float32), their identity index (N,) and the identity names.

        Cached in memory; reloaded when this or another process (an enrolment while a camera
        loop runs) changed the database, which SQLite's ``data_version`` tells cheaply.
        """
        if self._db is None:
            self._rows("SELECT 1")  # opens the file if another process created it meanwhile
        version = self._db.execute("PRAGMA data_version").fetchone()[0] if self._db is not None else -2
        if version != self._version:
            self._cache, self._version = None, version
        if self._cache is None:
            rows = self._rows("SELECT i.name, e.vector FROM embeddings e JOIN identities i ON i.id = e.identity_id ORDER BY i.name, e.id")
            names = sorted({r[0] for r in rows})
            index = {n: k for k, n in enumerate(names)}
            mat = np.frombuffer(b"".join(r[1] for r in rows), dtype=np.float32).reshape(len(rows), self.dim).copy()
            owner = np.fromiter((index[r[0]] for r in rows), dtype=np.int64, count=len(rows))
            self._cache = (mat, owner, np.einsum("ij,ij->i", mat, mat), names)
            self._norms = np.maximum(np.sqrt(self._cache[2]), 1e-12)
            self._buf = np.empty(len(mat), np.float32)
        mat, owner, _, names = self._cache
        return mat, owner, names

    def embeddings_of(self, name: str) -> np.ndarray:
        """The embeddings enrolled for ``name`` (K, D). Raises StoreError if unknown."""
        mat, owner, names = self.matrix()
        if name not in names:
            raise StoreError(self._unknown(name))
        return mat[owner == names.index(name)]

    def identify(self, query: np.ndarray, threshold: float | None = None) -> Match:
        """The nearest identity to ``query``; ``name`` is ``None`` when beyond the threshold.

        One matrix-vector product into a preallocated buffer; the square root (or the cosine
        normalisation) is applied to the winner only. ``einsum`` rather than BLAS: a
        multi-threaded BLAS matrix-vector product stalls on a busy CPU (measured 20-30 ms for
        10,000 rows at load 12 on 2 cores, against 0.3 ms single-threaded).

        Raises:
            StoreError: If nothing is enrolled.
        """
        mat, owner, names = self.matrix()
        if not len(mat):
            raise StoreError(self._unknown(""))
        thr = self.threshold if threshold is None else threshold
        q = np.ascontiguousarray(query, dtype=np.float32).ravel()
        sq, buf = self._cache[2], self._buf
        np.einsum("ij,j->i", mat, q, out=buf)
        if self.metric == "cosine":
            buf /= self._norms  # cosine similarity times |q|: the largest is the nearest
            i = int(np.argmax(buf))
            d = 1.0 - float(buf[i]) / max(float(np.linalg.norm(q)), 1e-12)
        else:
            buf *= -2.0
            buf += sq  # |m|^2 - 2 m.q: the smallest is the nearest
            i = int(np.argmin(buf))
            d = float(np.sqrt(max(float(buf[i]) + float(q @ q), 0.0)))
        ok = d <= thr
        return Match(names[owner[i]] if ok else None, d, ok, thr)

    def verify(self, name: str, query: np.ndarray, threshold: float | None = None) -> Match:
        """Distance from ``query`` to the nearest of ``name``'s embeddings, and whether it matches."""
        ref = self.embeddings_of(name)
        thr = self.threshold if threshold is None else threshold
        d = float(distances(ref, query, self.metric).min())
        return Match(name, d, d <= thr, thr)
