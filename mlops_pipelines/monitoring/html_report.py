"""A drift report as one self-contained HTML page: summary, per-column table, reference-vs-current plots.

Nothing is fetched when the page is opened (no external CSS, scripts, fonts or images): the plots are
PNGs embedded as base64 data URIs, so the page can be attached to a run, mailed, or opened offline.
"""

from __future__ import annotations

import base64
import html
import io
import math
from numbers import Real

import numpy as np
import pandas as pd

from mlops_pipelines.monitoring.drift import DriftReport, _finite
from mlops_pipelines.monitoring.profile import ReferenceProfile

_STYLE = """
body { font-family: sans-serif; margin: 2em; color: #222; }
table { border-collapse: collapse; margin: 1em 0; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.3em 0.6em; text-align: left; }
th { background: #f0f0f0; }
tr.drift td { background: #fde8e8; }
figure { display: inline-block; margin: 0.5em; }
"""
_MAX_CATEGORIES = 20  # beyond this a bar chart is unreadable; the largest shares are kept


def _plain(text: object) -> str:
    """Text for matplotlib with '$' escaped, so a name or category never switches on mathtext."""
    return str(text).replace("$", r"\$")


def _fmt(value: object) -> str:
    """A cell's text, escaped: floats to 4 significant digits, missing values as 'n/a'."""
    if value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if isinstance(value, Real) and not isinstance(value, bool | int | np.integer | np.bool_):
        return html.escape(f"{float(value):.4g}")
    return html.escape(str(value))


def _ranked(report: DriftReport) -> pd.DataFrame:
    """The report's rows, drifted columns first, then by PSI descending (missing PSI last)."""
    frame = report.to_frame()
    frame["_psi"] = frame["psi"].astype("float64").fillna(-np.inf)
    frame = frame.sort_values(["drift", "_psi"], ascending=[False, False], kind="stable")
    return frame.drop(columns="_psi").reset_index(drop=True)


def _png(figure: object) -> str:
    """The figure as an ``<img>`` data URI."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=90, bbox_inches="tight")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _plot_numeric(axes: object, quantiles: list[float], current: pd.Series) -> None:
    """Reference CDF read off its quantile sketch against the empirical CDF of current's finite values."""
    if quantiles:
        axes.plot(quantiles, np.linspace(0, 1, len(quantiles)), label="reference")
    values = np.sort(_finite(current))
    if values.size:
        axes.step(values, np.arange(1, values.size + 1) / values.size, where="post", label="current")
    axes.set_ylabel("cumulative share")
    axes.set_ylim(0, 1.02)


def _plot_categorical(axes: object, counts: dict[str, int], current: pd.Series) -> list[str]:
    """Side-by-side shares per category; categories unseen in the reference are labelled '(new)'.

    Returns the new categories, so the caption can name them in text (the PNG is not searchable).
    """
    ref = pd.Series(counts, dtype="float64")
    ref = ref / ref.sum() if ref.sum() else ref
    cur = current.dropna().astype(str).value_counts(normalize=True)  # same null handling as the drift test
    categories = list(ref.index) + sorted(set(cur.index) - set(ref.index))
    table = pd.DataFrame({"reference": ref.reindex(categories, fill_value=0.0),
                          "current": cur.reindex(categories, fill_value=0.0)}, index=categories)
    table = table.loc[table.max(axis=1).sort_values(ascending=False, kind="stable").index[:_MAX_CATEGORIES]]
    x = np.arange(len(table))
    axes.bar(x - 0.2, table["reference"], width=0.4, label="reference")
    axes.bar(x + 0.2, table["current"], width=0.4, label="current")
    labels = [_plain(f"{c} (new)" if c not in ref.index else c) for c in table.index]
    axes.set_xticks(x, labels, rotation=45, ha="right")
    axes.set_ylabel("share")
    return categories[len(ref):]


def _plots(ranked: pd.DataFrame, profile: ReferenceProfile, current: pd.DataFrame, top: int) -> list[str]:
    """Figures for the ``top`` most drifted columns that can be drawn (missing on one side: skipped)."""
    # A bare Figure on an explicit Agg canvas: headless, and pyplot's global backend and figure
    # registry stay untouched, so nothing leaks and the caller's own figures are left alone.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    blocks: list[str] = []
    for row in ranked.itertuples(index=False):
        if len(blocks) >= top:
            break
        name = row.column
        if name not in current.columns or (name not in profile.numeric and name not in profile.categorical):
            continue
        figure = Figure(figsize=(5.5, 3.5))
        FigureCanvasAgg(figure)
        axes = figure.add_subplot()
        new: list[str] = []
        if name in profile.numeric:
            _plot_numeric(axes, profile.numeric[name].quantiles, current[name])
        else:
            new = _plot_categorical(axes, profile.categorical[name].counts, current[name])
        axes.set_title(_plain(f"{name}: PSI {_fmt(row.psi)}, drift {bool(row.drift)}"), fontsize=10)
        if axes.get_legend_handles_labels()[0]:  # a side with no values leaves nothing to label
            axes.legend(fontsize=8)
        uri = _png(figure)
        figure.clear()  # free the artists now rather than at garbage collection
        alt = html.escape(str(name))
        caption = alt + ("; not in the reference: " + ", ".join(html.escape(f"{c} (new)") for c in new) if new else "")
        blocks.append(f'<figure><img src="{uri}" alt="{alt}"><figcaption>{caption}</figcaption></figure>')
    return blocks


def render_drift_html(report: DriftReport, profile: ReferenceProfile, current: pd.DataFrame, title: str,
                      summary: dict[str, object] | None = None, top: int = 4) -> str:
    """Render a drift report as a single self-contained HTML page.

    Args:
        report: the drift of each column, e.g. from ``detect_drift_from_profile``.
        profile: the reference profile the report was computed against (source of the reference plots).
        current: the current frame the report was computed on (source of the current plots).
        title: page title and top heading.
        summary: key/value pairs shown above the table (month, champion version, drift share, ...);
            floats are shown to 4 significant digits.
        top: how many of the most drifted columns (drift flag first, then PSI) get a plot; columns
            missing from ``profile`` or ``current`` are skipped and the next one is drawn instead.

    Returns:
        The HTML document as a string, with plots embedded as base64 PNG data URIs.
    """
    parts = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
             f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head><body>",
             f"<h1>{html.escape(title)}</h1>"]
    if summary:
        rows = "".join(f"<tr><th>{_fmt(k)}</th><td>{_fmt(v)}</td></tr>" for k, v in summary.items())
        parts.append(f"<h2>Summary</h2><table>{rows}</table>")
    if not report.columns:
        parts.append("<p>No columns were compared.</p></body></html>")
        return "\n".join(parts)

    ranked = _ranked(report)
    parts.append(f"<p>{len(report.drifted_columns)} of {len(report.columns)} columns drifted "
                 f"(share {_fmt(report.share_drifted)}; dataset drift: {report.dataset_drift}).</p>")
    header = "".join(f"<th>{_fmt(c)}</th>" for c in ranked.columns)
    body = "".join(
        f'<tr class="{"drift" if row.drift else "stable"}">' + "".join(f"<td>{_fmt(v)}</td>" for v in row) + "</tr>"
        for row in ranked.itertuples(index=False))
    parts.append(f"<h2>Columns</h2><table><thead><tr>{header}</tr></thead><tbody>{body}</tbody></table>")

    plots = _plots(ranked, profile, current, top)
    if plots:
        parts.append("<h2>Reference vs current</h2>" + "".join(plots))
    parts.append("</body></html>")
    return "\n".join(parts)
