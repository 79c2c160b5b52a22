"""``edgesdk face ...`` (enroll, verify, identify, compare, calibrate, list, remove) and ``edgesdk eval face``."""

from __future__ import annotations

import argparse
from pathlib import Path

from sdk.console import Output, add_command, number, table
from sdk.web.serve import add_serve_args

EXIT_CODES = """exit codes:
  0  success (verify: the face matches; identify: a known face)
  1  verify: no match; identify: nobody known (the JSON line says so)
  2  bad input: unreadable image, no face, several faces (without --largest), tiny or
     blurred face, unknown name, empty database, database made with another model, bad option
On any error nothing is written to the database."""


def _face_options() -> argparse.ArgumentParser:
    from sdk.console import add_runner_args
    from sdk.embeddings import default_db_path

    p = argparse.ArgumentParser(add_help=False)
    g = p.add_argument_group("face pipeline")
    g.add_argument("--db", default=str(default_db_path()), help=f"face database (SQLite, created 0600; default {default_db_path()})")
    g.add_argument("--model", default=None, help="embedding .tflite with a face-embed card (default: the shipped pipeline)")
    g.add_argument("--detector", choices=("blazeface", "haar"), default="blazeface", help="face detector")
    g.add_argument("--threshold", type=number(float, 0, low_open=True), default=None, help="distance threshold (default: calibrated, else the model's)")
    g.add_argument("--min-face", type=number(float, 0), default=None, help="smallest usable face in pixels (default: the pipeline's, 40)")
    g.add_argument("--min-sharpness", type=number(float, 0), default=None, help="smallest Laplacian variance of the face (default: the pipeline's, 30)")
    add_runner_args(g)
    return p


def _camera_options() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(add_help=False)
    g = p.add_argument_group("camera")
    g.add_argument("--source", default=None, help="camera index, /dev/videoN, video file or URL instead of IMAGE")
    g.add_argument("--consistent", type=number(int, 1), default=3, help="frames that must agree before a decision is reported")
    g.add_argument("--frames", type=number(int, 0), default=0, help="stop after this many frames (0: until the source ends or Ctrl-C)")
    return p


def _live(app, args: argparse.Namespace, out: Output, mode: str, name: str | None) -> int:
    """Camera verify/identify, with the web view when ``--serve`` is given (read-only: no enrolment through it)."""
    from apps.face.live import live
    from sdk.web.serve import serve_options, start_web, stop_web

    serve = serve_options(args)
    emb = app.embedder
    runner = getattr(emb, "runner", None) or getattr(getattr(emb, "pipeline", None), "embedder", None)  # TFLite or pipeline embedder
    web = start_web(serve, out, "face", runner, args.source, frame_hook=True, identities=lambda: _identities(args.db))
    try:
        return live(app, out, args.source, mode, name, args.threshold, args.consistent, args.frames, args.largest,
                    on_frame=web.metrics if web is not None else None)
    finally:
        stop_web(web, serve)


def _identities(db: str) -> list[dict]:
    from sdk.embeddings import EmbeddingStore

    with EmbeddingStore(db, None) as store:  # a connection of the web thread's own (SQLite objects stay in their thread)
        return [{"name": r["name"], "embeddings": r["embeddings"]} for r in store.identities()]


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    fmt = argparse.RawDescriptionHelpFormatter
    face = add_command(sub, "face", None, help="face verification with stored embeddings", epilog=EXIT_CODES)
    fs = face.add_subparsers(dest="face_command", metavar="ACTION", required=True)
    fo, cam = _face_options(), _camera_options()
    sel = argparse.ArgumentParser(add_help=False)
    sel.add_argument("--largest", action="store_true", help="use the largest face when an image has several (default: refuse)")

    def add(name: str, helptext: str, *parents: argparse.ArgumentParser) -> argparse.ArgumentParser:
        return fs.add_parser(name, help=helptext, parents=[common, *parents], epilog=EXIT_CODES, formatter_class=fmt)

    p = add("enroll", "add a person from photos or camera frames", fo, cam, sel)
    p.add_argument("name", metavar="NAME")
    p.add_argument("images", nargs="*", metavar="IMAGE")
    p.add_argument("--count", type=number(int, 1), default=5, help="camera: sharp, frontal, single-face frames to keep")
    p.add_argument("--skip-bad", action="store_true", help="skip unusable images with a warning instead of failing")
    p.set_defaults(func=_enroll)
    p = add("verify", "is this NAME? (distance to NAME's nearest embedding)", fo, cam, sel)
    p.add_argument("name", metavar="NAME")
    p.add_argument("image", nargs="?", metavar="IMAGE")
    add_serve_args(p)
    p.set_defaults(func=_verify)
    p = add("identify", "who is this? nearest enrolled identity, or null", fo, cam, sel)
    p.add_argument("image", nargs="?", metavar="IMAGE")
    add_serve_args(p)
    p.set_defaults(func=_identify)
    p = add("compare", "distance between the faces of two images", fo, sel)
    p.add_argument("a", metavar="IMAGE_A")
    p.add_argument("b", metavar="IMAGE_B")
    p.set_defaults(func=_compare)
    p = add("calibrate", "threshold from genuine vs impostor distances, stored in the database", fo)
    p.add_argument("--pairs", default=None, help="CSV: image_a,image_b,same (default: all pairs of the enrolled set)")
    p.add_argument("--far", type=number(float, 0, 1), default=1e-3, help="target false-accept rate")
    p.add_argument("--dry-run", action="store_true", help="report only, do not store the threshold")
    p.set_defaults(func=_calibrate)
    p = add("list", "enrolled identities")
    p.add_argument("--db", default=fo.parse_known_args([])[0].db, help="face database")
    p.set_defaults(func=_list)
    p = add("remove", "delete an identity and its embeddings")
    p.add_argument("name", metavar="NAME")
    p.add_argument("--db", default=fo.parse_known_args([])[0].db, help="face database")
    p.set_defaults(func=_remove)


def register_eval(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("face", parents=[common, _face_options()], help="verification metrics on labelled pairs",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--pairs", required=True, help="CSV: image_a,image_b,same")
    p.add_argument("--far", type=number(float, 0, 1), default=1e-3, help="FAR for the TAR figure")
    p.add_argument("--compare-dlib", action="store_true", help="also run dlib's own pipeline (needs the dlib package)")
    p.set_defaults(func=_eval)


def _app(args: argparse.Namespace, with_store: bool = True, create: bool = False):
    """The face app for ``args``; only enrolment may create the database (nothing written otherwise)."""
    from apps.face.app import FaceApp
    from apps.face.loader import load_embedder
    from sdk.console import runner_kwargs
    from sdk.embeddings import EmbeddingStore, StoreError, default_db_path

    if with_store and not create and not Path(args.db).is_file():
        raise StoreError(f"{args.db}: no face database here; enroll someone first (`edgesdk face enroll NAME IMAGE...`) or pass --db")
    if create and Path(args.db) != default_db_path() and not Path(args.db).parent.is_dir():
        # only the default location is made for you: a mistyped --db must not grow folders
        raise StoreError(f"--db {args.db}: folder {Path(args.db).parent} does not exist; create it first (it will hold biometric data: mode 0700)")
    emb = load_embedder(args.model, args.detector, args.min_face, args.min_sharpness, **runner_kwargs(args))
    store = None
    if with_store:
        store = EmbeddingStore(args.db, emb.model_hash, emb.dim, emb.metric, emb.threshold, emb.model_name)
    return FaceApp(emb, store)


def _need_one(args: argparse.Namespace, what: str) -> None:
    from sdk.errors import ConfigError

    if bool(getattr(args, "source", None)) == bool(what):
        raise ConfigError(f"face {args.face_command}: give either an IMAGE or --source CAMERA, not {'both' if what else 'neither'}")
    if getattr(args, "serve", None) and not args.source:
        raise ConfigError(f"face {args.face_command}: --serve shows a live source; add --source CAMERA|VIDEO or drop --serve")


def _enroll(args: argparse.Namespace, out: Output) -> int:
    from sdk.errors import ConfigError

    _need_one(args, args.images)
    if args.count < 1:
        raise ConfigError(f"--count must be at least 1, got {args.count}")
    app = _app(args, create=True)
    if args.source:
        from apps.face.live import enroll_from_camera

        res = enroll_from_camera(app, args.name, args.source, args.count, args.frames, largest=args.largest)
    else:
        res = app.enroll(args.name, args.images, largest=args.largest, skip_bad=args.skip_bad)
    out.emit(res, f"enrolled {res['name']}: {res['enrolled']} new embedding(s), {res['embeddings']} in all"
             + (f", {res['skipped']} skipped" if res.get("skipped") else ""))
    return 0


def _emit_match(out: Output, m, label: str) -> int:
    d = m.to_json()
    verdict = "MATCH" if m.match else "no match"
    out.emit(d, f"{label}: {verdict} ({d['name'] or 'unknown'}, distance {d['distance']:.3f}, threshold {d['threshold']:.3f})")
    return 0 if m.match else 1


def _verify(args: argparse.Namespace, out: Output) -> int:
    _need_one(args, args.image)
    app = _app(args)
    if args.source:
        return _live(app, args, out, "verify", args.name)
    return _emit_match(out, app.verify(args.name, args.image, args.threshold, args.largest), args.image)


def _identify(args: argparse.Namespace, out: Output) -> int:
    _need_one(args, args.image)
    app = _app(args)
    if args.source:
        return _live(app, args, out, "identify", None)
    return _emit_match(out, app.identify(args.image, args.threshold, args.largest), args.image)


def _compare(args: argparse.Namespace, out: Output) -> int:
    app = _app(args, with_store=Path(args.db).is_file())
    res = app.compare(args.a, args.b, args.threshold, args.largest)
    out.emit(res, f"distance {res['distance']:.3f} ({'same person' if res['match'] else 'different people'} at threshold {res['threshold']:.3f})")
    return 0 if res["match"] else 1


def _calibrate(args: argparse.Namespace, out: Output) -> int:
    from apps.face.eval import calibrate_report

    app = _app(args)
    res = calibrate_report(app, args.pairs, args.far, store_it=not args.dry_run)
    human = "\n".join(f"{k}: {v:.4f}" if isinstance(v, float) else f"{k}: {v}" for k, v in res.items() if k != "roc")
    out.emit(res, human + "\nROC operating points:\n" + table(res["roc"], floatfmt=".4g"))
    return 0


def _list(args: argparse.Namespace, out: Output) -> int:
    import time

    from sdk.embeddings import EmbeddingStore

    with EmbeddingStore(args.db, None) as store:
        rows = store.identities()
        if out.json_mode:
            for r in rows:
                out.emit(r)
        else:
            fmt = [{**r, "created": time.strftime("%Y-%m-%d %H:%M", time.localtime(r["created"])),
                    "updated": time.strftime("%Y-%m-%d %H:%M", time.localtime(r["updated"]))} for r in rows]
            out.text(table(fmt, ["name", "embeddings", "created", "updated"]))
            out.text(f"threshold {store.threshold:.4f} ({'calibrated' if store.calibrated else 'model default'}), metric {store.metric}")
    return 0


def _remove(args: argparse.Namespace, out: Output) -> int:
    from sdk.embeddings import EmbeddingStore

    with EmbeddingStore(args.db, None) as store:
        n = store.remove(args.name)
    out.emit({"name": args.name, "removed": n}, f"removed {args.name} ({n} embedding(s))")
    return 0


def _eval(args: argparse.Namespace, out: Output) -> int:
    from apps.face.eval import evaluate_pairs

    app = _app(args, with_store=False)
    for row in evaluate_pairs(app, args.pairs, args.far, compare_dlib=args.compare_dlib):
        out.emit(row)
    return 0
