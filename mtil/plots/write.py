"""All figures of one run directory into a folder: `FIGURES`, `write_run_figures` (written paths and skipped
figures with the reason), `plot_run` (what `mtil run` and `mtil demo` call at the end)."""
from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from ..errors import MtilError
from ..rundir.layout import RunDir
from .common import MissingData, as_run, save_figure
from .events import event_timeline
from .experts import fixed_expert_heatmap, usage_heatmap
from .matrix import accuracy_matrix
from .router import DEFAULT_LAYER, default_layer, parse_layer, router_weights

log = logging.getLogger(__name__)

FIGURES = ("fixed_experts", "usage_image", "usage_text", "accuracy_matrix", "router_weights", "events")


def _check_formats(formats) -> tuple[str, ...]:
    if isinstance(formats, str):
        formats = formats.split(",")
    formats = tuple(dict.fromkeys(f.strip().lower().lstrip(".") for f in formats if f.strip()))
    supported = FigureCanvasAgg.get_supported_filetypes()
    bad = [f for f in formats if f not in supported]
    if bad or not formats:
        raise MtilError(f"unknown figure format {', '.join(bad) or '(none given)'}; use some of "
                        f"{', '.join(sorted(supported))}")
    return formats


def write_run_figures(run_dir, out_dir=None, formats: Iterable[str] = ("png", "svg"),
                      layer: str | None = None) -> tuple[list[Path], dict[str, str]]:
    """All run figures into `out_dir` (default RUN_DIR/figures): (written paths, {skipped figure: reason})."""
    run = as_run(run_dir)
    formats = _check_formats(formats)
    if layer is not None:
        parse_layer(run, layer)           # a layer the user named must exist: an error, never a silent skip
    out = Path(out_dir) if out_dir is not None else RunDir(run.path).figures
    builders: dict[str, Callable[[], Figure]] = {
        "fixed_experts": lambda: fixed_expert_heatmap(run),
        "usage_image": lambda: usage_heatmap(run, "image"),
        "usage_text": lambda: usage_heatmap(run, "text"),
        "accuracy_matrix": lambda: accuracy_matrix(run),
        "router_weights": lambda: router_weights(run, layer or default_layer(run) or DEFAULT_LAYER),
        "events": lambda: event_timeline(run),
    }
    written, skipped = [], {}
    for name, build in builders.items():
        try:
            fig = build()
        except MissingData as e:
            skipped[name] = str(e)
            log.info("figure %s skipped: %s", name, e)
            continue
        for fmt in formats:
            written.append(save_figure(fig, out / f"{name}.{fmt}", fmt))
    log.info("wrote %d figure files to %s", len(written), out)
    return written, skipped


def plot_run(run_dir, out_dir=None, formats: Iterable[str] = ("png", "svg"), layer: str | None = None) -> list[Path]:
    """Write fixed_experts, usage_image, usage_text, accuracy_matrix, router_weights and events (each in every
    format) into `out_dir` (default RUN_DIR/figures); figures the run has no data for are skipped and logged."""
    return write_run_figures(run_dir, out_dir, formats, layer)[0]
