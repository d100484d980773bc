"""Tables, JSON and PNG plots of :class:`~rstfast.equivariance.measure.Measurement` results."""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Dict, Optional, Sequence, Tuple

from .measure import Measurement

__all__ = ["format_table", "summary", "format_bases_table", "format_stability_table",
           "write_json", "plot_sweeps"]

FLOOR = 1e-17          # exact zeros are drawn here on the log axis
CEILING = 10.0         # larger errors (degenerate bases) are drawn here


def _fmt(value: Optional[float]) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.1e}"


def _grid(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(str(c)) for c in col) for col in zip(header, *rows)]
    line = lambda cells: "  ".join(str(c).rjust(w) for c, w in zip(cells, widths))
    return "\n".join([line(header), line(["-" * w for w in widths])] + [line(r) for r in rows])


def format_table(m: Measurement) -> str:
    """One row per transform, one column per probed layer (relative error), then the group slots
    ``(k, m)`` used and, for class outputs, the fraction of unchanged predictions. ``*`` marks
    transforms that are exact on the input's pixel grid."""
    names = m.names()
    legend = [f"{m.model}: input {list(m.input_shape)}, {m.dtype}, region {m.region} of each "
              f"map's half-size, {m.mode} interpolation"]
    legend += [f"  {layer['name']}: {layer['type']} -> {layer['shape']}"
               + (f" (R={layer['group']['rotations']}, S={layer['group']['scales']})"
                  if layer["group"] else "") for layer in m.layers]
    has_class = any(r["errors"][n].get("agreement") is not None for r in m.results for n in names)
    header = ["transform"] + names + ["slots"] + (["same class"] if has_class else [])
    rows = []
    for r in m.results:
        errors = r["errors"]
        slots = next((e["slots"] for e in errors.values() if e.get("slots") is not None), None)
        row = [r["label"] + (" *" if r["exact_input"] else "")] + [_fmt(errors[n]["error"]) for n in names]
        row.append("-" if slots is None else f"{slots[0]},{slots[1]}")
        if has_class:
            agree = [errors[n].get("agreement") for n in names if errors[n].get("agreement") is not None]
            row.append(f"{agree[-1]:.2f}")
        rows.append(row)
    return "\n".join(legend) + "\n" + _grid(header, rows)


def _slot_angle(angle: float, rotations: int) -> bool:
    return abs(angle / (360 / rotations) - round(angle / (360 / rotations))) < 1e-9


def summary(m: Measurement, layer: str) -> Dict[str, Optional[float]]:
    """Headline numbers of one layer: error at 90 and 45 degrees, mean over the angles that are
    not slot multiples, error at zoom ``ratio**+1`` / ``ratio**-1`` and mean over the zooms off
    the scale grid (None where not measured)."""
    group = next((l["group"] for l in m.layers if l["name"] == layer), None) or {"rotations": 1, "scale_ratio": 1.0}
    angles, rot_err = m.sweep("rotation", layer)
    zooms, zoom_err = m.sweep("scale", layer)
    by_angle = {a % 360: e for a, e in zip(angles, rot_err)}
    off = [e for a, e in zip(angles, rot_err) if not _slot_angle(a, group["rotations"]) and a % 90]
    ratio = group["scale_ratio"] if group["scale_ratio"] != 1 else None
    near = lambda q: next((e for z, e in zip(zooms, zoom_err) if ratio and abs(z - q) < 1e-9 * q), None)
    off_grid = [e for z, e in zip(zooms, zoom_err)
                if ratio and abs(math.log(z) / math.log(ratio) - round(math.log(z) / math.log(ratio))) > 1e-6]
    return {"rot90": by_angle.get(90.0), "rot45": by_angle.get(45.0),
            "rot_off_slot_mean": sum(off) / len(off) if off else None,
            "zoom_up": near(ratio) if ratio else None, "zoom_down": near(1 / ratio) if ratio else None,
            "zoom_off_grid_mean": sum(off_grid) / len(off_grid) if off_grid else None}


def format_bases_table(results: Dict[str, Measurement], layer: str) -> str:
    """One row per basis type: :func:`summary` of ``layer``, sorted by the mean error at angles
    off the rotation slots."""
    header = ["basis", "R", "rot 90", "rot 45", "rot off-slot", "zoom x r", "zoom x 1/r",
              "zoom off-grid"]
    keys = ("rot90", "rot45", "rot_off_slot_mean", "zoom_up", "zoom_down", "zoom_off_grid_mean")
    summaries = {basis: summary(m, layer) for basis, m in results.items()}
    order = sorted(results, key=lambda b: (summaries[b]["rot_off_slot_mean"] is None,
                                           summaries[b]["rot_off_slot_mean"] or 0.0))
    rows = [[basis, next(l["group"] for l in results[basis].layers if l["name"] == layer)["rotations"]]
            + [_fmt(summaries[basis][k]) for k in keys] for basis in order]
    return _grid(header, rows)


def format_stability_table(results: Dict[str, dict]) -> str:
    """One row per model: accuracy (if labelled) and the fraction of unchanged predictions per
    transform. A model that predicts (almost) one class (``degenerate``) is marked ``!`` and
    named in a line under the table: its stability is no evidence of equivariance."""
    first = next(iter(results.values()))
    header = ["model", "images", "accuracy"] + [t["label"] for t in first["transforms"]]
    rows = [[name + (" !" if r.get("degenerate") else ""), r["num_images"],
             "-" if r["accuracy"] is None else f"{r['accuracy']:.3f}"]
            + [f"{t['stable']:.3f}" for t in r["transforms"]] for name, r in results.items()]
    notes = [f"! {name}: {100 * r['top_class_share']:.0f} % of its predictions are one class; "
             f"such a model is stable under any transform, so this stability says nothing"
             for name, r in results.items() if r.get("degenerate")]
    return "\n".join([_grid(header, rows)] + notes)


def write_json(obj, path) -> Path:
    """``obj`` as indented JSON (NaN and infinities -> null)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(_finite(obj), indent=1, allow_nan=False))
    return path


def _finite(obj):
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


def plot_sweeps(curves: Sequence[Tuple[str, Measurement, str]], path, title: str = "") -> Path:
    """PNG with error vs rotation angle (left) and vs zoom factor (right, log axis), one line per
    ``(label, measurement, layer)``; dotted lines mark the rotation slots and the scale grid of
    the first curve; exact zeros are drawn at 1e-17, errors above 10 at 10."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_rot, ax_zoom) = plt.subplots(1, 2, figsize=(12, 4.5))
    measured = {kind: [v for _, m, layer in curves for v in m.sweep(kind, layer)[0]]
                for kind in ("rotation", "scale")}
    if measured["scale"]:
        ax_zoom.set_xscale("log")
    colours = plt.get_cmap("tab20").colors
    for index, (label, m, layer) in enumerate(curves):
        style = dict(color=colours[(2 * index) % 20 + (2 * index) // 20 % 2], marker=".",
                     linestyle=("-", "--", ":")[index // 10 % 3], label=label)
        for ax, kind in ((ax_rot, "rotation"), (ax_zoom, "scale")):
            values, errors = m.sweep(kind, layer)
            order = sorted(range(len(values)), key=values.__getitem__)
            ax.plot([values[i] for i in order],
                    [min(max(errors[i], FLOOR), CEILING) for i in order], **style)
    group = next((l["group"] for l in curves[0][1].layers if l["group"]), None) if curves else None
    if group:
        for i in range(group["rotations"] + 1):
            ax_rot.axvline(360 / group["rotations"] * i, color="0.8", linestyle=":", zorder=0)
        if group["scale_ratio"] != 1:
            grid = [group["scale_ratio"] ** k for k in range(-3, 4)]
            for q in grid:
                ax_zoom.axvline(q, color="0.8", linestyle=":", zorder=0)
            ax_zoom.set_xticks(grid, [f"{q:.2f}" for q in grid])
            ax_zoom.minorticks_off()
    ax_rot.set(xlabel="rotation of the input (degrees, counter-clockwise)",
               ylabel="relative L2 error ||f(Tx) - T'f(x)|| / ||T'f(x)||", xlim=(0, 360))
    ax_rot.set_xticks(range(0, 361, 45))
    ax_zoom.set(xlabel="zoom of the input (x scale)")
    for ax, kind in ((ax_rot, "rotation"), (ax_zoom, "scale")):
        if not measured[kind]:                       # nothing of this kind was measured
            ax.text(0.5, 0.5, f"no {kind}s measured", ha="center", transform=ax.transAxes)
            continue
        ax.set_yscale("log")
        ax.grid(True, which="major", alpha=0.3)
    if measured["scale"]:
        ax_zoom.set_xlim(min(measured["scale"]) / 1.05, max(measured["scale"]) * 1.05)
    ax_rot.legend(fontsize=7, loc="lower right")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
