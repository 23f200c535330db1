"""Category plots as PNG bytes: one dataset's distribution, several datasets side by side, and their shares.

Pure and deterministic: the same input gives the same bytes (fixed size rules and dpi, no timestamp or software
chunk in the PNG), so a report of unchanged rows stores the same files. Drawn on matplotlib's ``Figure`` with the
Agg canvas, without pyplot's global state, so plots may be drawn from several threads; matplotlib is imported when
a plot is drawn, never at import.

Category and dataset names are untrusted text: they are shown as plain text (a ``$`` never starts mathtext, TeX is
never used) and cut to ``LABEL_CHARS``.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

DPI = 80
WIDTH_IN = 8.0
MIN_HEIGHT_IN = 3.0
MAX_HEIGHT_IN = 16.0
LABEL_CHARS = 40
# matplotlib's default colour cycle (tab10), named so the colours do not follow a user's rcParams
COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf")


def plain_label(text: str, limit: int = LABEL_CHARS) -> str:
    """Text as matplotlib shows it literally: whitespace collapsed, cut to ``limit`` characters (an ellipsis
    marks the cut), and every ``$`` escaped (``\\$``) so that no part of it is read as mathtext.
    """
    text = " ".join(str(text).split())
    if len(text) > limit:
        text = text[: limit - 1] + "…"
    return text.replace("$", r"\$")


def data_uri(png: bytes) -> str:
    """A PNG as a ``data:`` URI, for a Markdown image in the metadata the UI shows."""
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _height(rows: int) -> float:
    """Figure height in inches for ``rows`` bar rows: every row readable, within fixed bounds."""
    return min(MAX_HEIGHT_IN, max(MIN_HEIGHT_IN, 1.3 + 0.28 * rows))


def _figure(height_in: float) -> Figure:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(WIDTH_IN, height_in), dpi=DPI)
    FigureCanvasAgg(figure)
    return figure


def _png(figure: Figure) -> bytes:
    buffer = io.BytesIO()
    # no Software chunk (nor any other text chunk): the bytes depend on the drawing only
    figure.savefig(buffer, format="png", dpi=DPI, metadata={"Software": None})
    return buffer.getvalue()


def _category_axis(axes: Axes, categories: Sequence[str], percent: bool = False) -> None:
    """Categories down the y axis, the first at the top, as plain text; counts (whole ticks) or percentages
    along x."""
    from matplotlib.ticker import MaxNLocator, PercentFormatter

    if percent:
        axes.xaxis.set_major_formatter(PercentFormatter(decimals=0))
    else:
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes.set_yticks(range(len(categories)), labels=[plain_label(c) for c in categories], usetex=False, fontsize=8)
    axes.invert_yaxis()
    axes.tick_params(axis="x", labelsize=8)
    axes.grid(axis="x", alpha=0.3)
    axes.set_axisbelow(True)


def _title(axes: Axes, title: str, xlabel: str) -> None:
    axes.set_title(plain_label(title, 80), usetex=False, fontsize=10)
    axes.set_xlabel(xlabel, usetex=False, fontsize=9)


def _empty(axes: Axes) -> None:
    axes.text(0.5, 0.5, "no categorized frames", ha="center", va="center", transform=axes.transAxes, usetex=False)
    axes.set_yticks([])


def distribution_png(counts: Mapping[str, int], title: str) -> bytes:
    """One dataset's category counts as horizontal bars, in the order given (list order, say), each bar labelled
    with its count."""
    categories = list(counts)
    figure = _figure(_height(len(categories)))
    axes = figure.add_subplot()
    if categories:
        values = [int(counts[c]) for c in categories]
        bars = axes.barh(range(len(categories)), values, color=COLORS[0])
        axes.bar_label(bars, labels=[str(v) for v in values], padding=2, fontsize=7, usetex=False)
        axes.set_xlim(0, max(max(values), 1) * 1.12)
        _category_axis(axes, categories)
    else:
        _empty(axes)
    _title(axes, title, "frames")
    figure.tight_layout()
    return _png(figure)


def _grouped(
    values_by_dataset: Mapping[str, Sequence[float]],
    categories: Sequence[str],
    title: str,
    xlabel: str,
    percent: bool = False,
) -> bytes:
    """Horizontal bars grouped by category, one bar per dataset in each group, with a legend of the datasets."""
    datasets = list(values_by_dataset)
    figure = _figure(_height(len(categories) * max(1.0, 0.45 * len(datasets))))
    axes = figure.add_subplot()
    if not categories or not datasets:
        _empty(axes)
    else:
        group = 0.8
        bar = group / len(datasets)
        for index, dataset in enumerate(datasets):
            offset = -group / 2 + bar * (index + 0.5)
            axes.barh(
                [position + offset for position in range(len(categories))],
                list(values_by_dataset[dataset]),
                height=bar,
                color=COLORS[index % len(COLORS)],
                label=plain_label(dataset, 30),
            )
        _category_axis(axes, categories, percent)
        legend = axes.legend(fontsize=8, loc="best")
        for text in legend.get_texts():
            text.set_usetex(False)
    _title(axes, title, xlabel)
    figure.tight_layout()
    return _png(figure)


def side_by_side_png(
    counts_by_dataset: Mapping[str, Mapping[str, int]], categories: Sequence[str], title: str = "frames per category"
) -> bytes:
    """Each category's frame count in every dataset, the datasets' bars side by side (a category a dataset lacks
    counts 0)."""
    values = {name: [int(counts.get(c, 0)) for c in categories] for name, counts in counts_by_dataset.items()}
    return _grouped(values, categories, title, "frames")


def shares_png(
    counts_by_dataset: Mapping[str, Mapping[str, int]],
    frames_by_dataset: Mapping[str, int],
    categories: Sequence[str],
    title: str = "share of each dataset's frames per category",
) -> bytes:
    """Like ``side_by_side_png``, with each count as a percentage of its dataset's categorized frames (a frame
    with several categories counts in each, so a dataset's shares may add up to more than 100 %)."""
    values = {
        name: [100.0 * counts.get(c, 0) / frames_by_dataset[name] if frames_by_dataset.get(name) else 0.0
               for c in categories]
        for name, counts in counts_by_dataset.items()
    }  # fmt: skip
    return _grouped(values, categories, title, "share of the dataset's categorized frames", percent=True)
