"""``graphengine plot``: loss and metric curves from a training log.

    graphengine plot metrics.jsonl -o loss.png

Reads the JSON-lines log that ``graphengine train`` writes and draws, against
the step, the losses (per-step records as a thin line, epoch and validation
records as markers) and, in a second panel, the other metrics.  Needs
matplotlib: ``pip install -e ".[plot]"``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from .main import CommandError


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "plot",
        help="draw loss and metric curves from a training log",
        description="Draw the loss and metric curves of a metrics.jsonl log written by "
        "graphengine train (needs matplotlib: the [plot] extra).",
    )
    parser.add_argument("log", help="metrics log (JSON lines)")
    parser.add_argument("-o", "--output", required=True, help="image file (.png, .svg, .pdf)")
    parser.add_argument(
        "--keys",
        metavar="K1,K2",
        help="record keys to draw (default: every train_/val_ metric and the step loss)",
    )
    parser.set_defaults(func=run_plot)


def read_records(path: Path) -> list[dict]:
    """The records of a log; CommandError names a line that is not JSON.  The file
    is read as the trainer reads it (MetricsLog): a regular file only, a line at a
    time, at most MAX_LINE_BYTES each."""
    from ..training.metrics import MAX_LINE_BYTES, MetricsLog

    records = []
    for number, line in enumerate(MetricsLog(path).lines(), 1):
        if line is None:
            raise CommandError(f"{path}:{number}: a line of more than {MAX_LINE_BYTES:,} bytes")
        if not line.strip():
            continue
        try:
            record = json.loads(line.decode("utf-8", "replace"))
        except (ValueError, RecursionError):
            raise CommandError(f"{path}:{number}: not a JSON record") from None
        if isinstance(record, dict) and "step" in record:
            records.append(record)
    if not records:
        raise CommandError(f"{path} holds no training records (JSON objects with a 'step')")
    return records


def series(records: list[dict], keys: list[str] | None = None) -> dict[str, tuple[list, list]]:
    """key -> (steps, values) for each metric key; the per-step loss is "loss"."""
    out: dict[str, tuple[list, list]] = {}
    for record in records:
        for key, value in record.items():
            metric = key.startswith(("train_", "val_")) or (
                key == "loss" and record.get("kind") == "step"
            )
            if not metric or not isinstance(value, (int, float)):
                continue
            if keys is not None and key not in keys:
                continue
            steps, values = out.setdefault(key, ([], []))
            if record["step"] in steps and key.startswith("val_"):
                continue  # an epoch record repeats its step's validation
            steps.append(record["step"])
            values.append(value)
    if keys is not None:
        missing = [k for k in keys if k not in out]
        if missing:
            raise CommandError(
                f"the log has no {', '.join(map(repr, missing))}; it has "
                f"{', '.join(map(repr, sorted(out)))}"
            )
    return out


def run_plot(args: argparse.Namespace) -> int:
    try:
        import matplotlib
    except ImportError:
        raise CommandError(
            'graphengine plot needs matplotlib: pip install -e ".[plot]" '
            "(or pip install matplotlib)"
        ) from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = [k.strip() for k in args.keys.split(",")] if args.keys else None
    curves = series(read_records(Path(args.log)), keys)
    losses = {k: v for k, v in curves.items() if k.endswith("loss")}
    others = {k: v for k, v in curves.items() if k not in losses}
    panels = [p for p in (losses, others) if p]
    fig, axes = plt.subplots(
        len(panels), 1, figsize=(7, 3.2 * len(panels)), sharex=True, squeeze=False
    )
    for ax, panel in zip(axes[:, 0], panels):
        for key, (steps, values) in sorted(panel.items()):
            style = (
                {"linewidth": 0.8, "alpha": 0.6}
                if key == "loss"
                else {"marker": "o", "markersize": 3}
            )
            ax.plot(steps, values, label=key, **style)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    axes[0, 0].set_ylabel("loss")
    if len(panels) > 1:
        axes[1, 0].set_ylabel("metric")
    axes[-1, 0].set_xlabel("step")
    fig.tight_layout()
    fig.savefig(args.output)
    plt.close(fig)
    print(f"wrote {args.output} ({len(curves)} curves)")
    return 0
