"""``adaptive-pool collect | train | retrain | info``."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

__all__ = ["add_arguments", "run"]


def add_arguments(command: str, parser: argparse.ArgumentParser) -> None:
    """Options of each subcommand."""
    if command in ("collect", "retrain"):
        parser.add_argument("--quick", action="store_true", help="a third of the tasks, one run each (a few minutes)")
        parser.add_argument("--fresh", action="store_true", help="discard earlier timings instead of resuming")
        parser.add_argument("--replicas", type=int, default=1, help="measure each task this many times (default 1)")
        parser.add_argument("--family", action="append", default=None, help="only this task family (repeatable)")
        parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    if command == "collect":
        parser.add_argument("--output", "-o", default=None, help="CSV file to write (default: the user data directory)")
        parser.add_argument("--limit", type=int, default=None, help="only the first N tasks")
    if command == "train":
        parser.add_argument("data", nargs="*", help="collection CSV file(s) (default: the last retrain's)")
        parser.add_argument("--output", "-o", default=None, help="model JSON to write (default: where AutoExecutor finds it)")
        parser.add_argument("--no-eval", action="store_true", help="skip the leave-one-family-out evaluation")
    if command == "retrain":
        parser.add_argument("--output", "-o", default=None, help="model JSON to write (default: where AutoExecutor finds it)")
        parser.add_argument("--data", default=None, help="CSV file for the timings (default: the user data directory)")
    if command == "info":
        parser.add_argument("--model", default=None, help="a model file, as AutoExecutor(model=...) would get")
        parser.add_argument("--json", action="store_true", help="machine-readable output")
        parser.add_argument(
            "--plot", metavar="FILE.png", default=None, help="draw the model's decision map with its training rows"
        )
        parser.add_argument(
            "--data", default=None, help="training CSV to draw (default: the one the model names, if found)"
        )


def run(command: str, args: argparse.Namespace) -> int:
    """Run one subcommand; returns the exit status."""
    if command == "collect":
        return _collect(args)
    if command == "train":
        return _train(args)
    if command == "retrain":
        return _retrain(args)
    if command == "info":
        return _info(args)
    print(f"unknown command {command!r}", file=sys.stderr)
    return 2


def _collect(args: argparse.Namespace) -> int:
    from . import collect, default_data_path

    out = Path(args.output) if args.output else default_data_path(args.quick)
    print(f"collecting timings into {out}", file=sys.stderr)
    path = collect(
        out,
        quick=args.quick,
        fresh=args.fresh,
        replicas=args.replicas,
        families=args.family,
        limit=args.limit,
        progress=not args.no_progress,
    )
    print(f"timings in {path}")
    return 0


def _train(args: argparse.Namespace) -> int:
    from . import default_data_path, train

    data = args.data
    if not data:
        full, quick = default_data_path(False), default_data_path(True)
        data = [str(full if full.exists() else quick)]
    missing = [d for d in data if not Path(d).exists()]
    if missing:
        print(f"no timings at {', '.join(missing)}; run 'adaptive-pool collect' first", file=sys.stderr)
        return 1
    result = train(data, args.output, evaluate_model=not args.no_eval, echo=print)
    _summary(result)
    return 0


def _retrain(args: argparse.Namespace) -> int:
    from . import retrain

    result = retrain(
        quick=args.quick,
        output=args.output,
        data=args.data,
        fresh=args.fresh,
        progress=not args.no_progress,
        echo=print,
        replicas=args.replicas,
        families=args.family,
    )
    _summary(result)
    return 0


def _summary(result: Any) -> None:
    scores = result.metadata.get("scores")
    if scores:
        print(_held_out(scores) + " (regret 1.000 = always the fastest route)")
    if not result.path:
        print("model not written")
        return
    from pathlib import Path

    from .._model import user_model_path

    if Path(result.path).resolve() == user_model_path().resolve():
        print(f"AutoExecutor now uses {result.path}")
    else:
        print(f"wrote {result.path}; use it with AutoExecutor(model=...) or ADAPTIVE_POOL_MODEL={result.path}")


def _plot(info: dict[str, object], args: argparse.Namespace) -> int:
    from pathlib import Path

    from .plot import plot_decision_map

    model_path = info.get("path")
    if not model_path:
        print("no model file is in use (the heuristic decides): nothing to draw", file=sys.stderr)
        return 1
    meta = info.get("metadata") or {}
    candidates = [args.data] if args.data else []
    # The metadata names the CSV files the model was trained on; look for
    # them beside the model and in a source checkout's training_data/.
    sources = meta.get("data") if isinstance(meta, dict) else None
    for source in sources if isinstance(sources, list) else []:
        name = source.get("file") if isinstance(source, dict) else None
        if isinstance(name, str):
            candidates += [
                str(Path(str(model_path)).parent / name),
                str(Path(__file__).resolve().parents[2] / "training_data" / name),
            ]
    data = next((c for c in candidates if c and Path(c).is_file()), None)
    if data is None:
        print("no training CSV found for this model: pass --data PATH", file=sys.stderr)
        return 1
    try:
        x_name, y_name = plot_decision_map(str(model_path), data, args.plot)
    except RuntimeError as exc:
        print(exc, file=sys.stderr)
        return 1
    print(f"wrote {args.plot}: the model's route by {x_name} and {y_name}, with {data}'s rows")
    return 0


def _info(args: argparse.Namespace) -> int:
    from . import model_info

    info = model_info(args.model)
    if args.plot:
        return _plot(info, args)
    if args.json:
        print(json.dumps(info, indent=2, sort_keys=True, default=str))
        return 0
    print(f"policy:  {info['source']} ({info['origin']})")
    print(f"path:    {info['path'] or '-'}")
    meta = info.get("metadata") or {}
    if meta:
        machine = meta.get("training_machine") or {}
        print(f"trained: {meta.get('trained_at', '?')} on {machine.get('platform', '?')}, "
              f"{machine.get('usable_cores', '?')} cores, Python {machine.get('python', '?')}")
        print(f"model:   {meta.get('estimator', '?')} (scikit-learn {meta.get('sklearn_version', '?')}), "
              f"{meta.get('rows', '?')} rows from {len(meta.get('families') or [])} families, "
              f"feature schema {meta.get('feature_schema_version', '?')}")
        print(f"features: {', '.join(meta.get('feature_names') or [])}")
        scores = meta.get("scores")
        if scores:
            print(_held_out(scores))
    return 0


def _held_out(scores: Any) -> str:
    """One line: the leave-one-family-out scores, model against heuristic."""
    m = scores["overall"]["model"]
    h = scores["overall"]["heuristic"]
    return (
        f"held-out (leave-one-family-out): accuracy model {m['accuracy']:.0%} vs heuristic "
        f"{h['accuracy']:.0%}; regret model {m['regret']:.3f} vs heuristic {h['regret']:.3f}"
    )
