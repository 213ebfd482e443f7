"""Plots: Vega-Lite specs rendered to inline SVG at build time with vl-convert (no script, no network).

The browser draws the SVG's text with the font vl-convert measured it with (DejaVu Sans, a Debian default) or with
Verdana, whose metrics are nearly the same, so labels neither overlap nor run out of the plot. Axis labels that
would touch are dropped by Vega's overlap removal (``labelOverlap: greedy``, with a separation), never drawn on top
of each other; ``tests/integration/test_report_browser.py`` checks the drawn boxes.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from markupsafe import Markup

from .view import Figure

_FONT = "DejaVu Sans, Verdana, sans-serif"
CHANCE_AUC = 0.5


def svg(spec: dict[str, Any]) -> Markup:
    """The SVG of a Vega-Lite spec whose data is inline."""
    import vl_convert

    spec = {
        "$schema": "https://vega.github.io/schema/vega-lite/v5.json",
        "config": {
            "font": _FONT,
            "axis": {
                "labelFontSize": 11,
                "titleFontSize": 12,
                "grid": True,
                "gridColor": "#e6e6e6",
                "labelLimit": 220,
                "labelOverlap": "greedy",
                "labelSeparation": 6,
                "labelFlush": True,
            },
            "axisX": {"tickCount": 5},
            # a category axis names every row: rows are 22 px apart, enough for 11 px labels, so none is dropped
            "axisBand": {"labelOverlap": False},
            "axisPoint": {"labelOverlap": False},
            "legend": {"labelFontSize": 11, "titleFontSize": 12},
            "header": {"labelFontSize": 11, "labelLimit": 240},
            "view": {"stroke": None, "discreteHeight": {"step": 22}},
        },
        "background": "white",
        "padding": {"left": 16, "right": 24, "top": 8, "bottom": 8},
        **spec,
    }
    # No base URL is allowed: the spec carries its data inline and rendering must not touch the network.
    out = vl_convert.vegalite_to_svg(spec, allowed_base_urls=[])
    # The SVG is generated here from released numbers; vl-convert escapes the text it contains.
    return Markup(out.replace("<svg ", '<svg role="img" focusable="false" ', 1))  # noqa: S704


def bar_figure(rows: Sequence[Mapping[str, Any]], *, x: str, y: str, title: str, x_title: str, alt: str) -> Figure:
    """Horizontal bars, largest first."""
    spec = {
        "width": 520,
        "data": {"values": list(rows)},
        "mark": {"type": "bar", "color": "#2b6cb0"},
        "encoding": {
            "y": {"field": y, "type": "nominal", "sort": "-x", "title": None},
            "x": {"field": x, "type": "quantitative", "title": x_title},
        },
    }
    return Figure(svg=svg(spec), caption=title, alt=alt)


def forest_figure(rows: Sequence[Mapping[str, Any]], *, metrics: Sequence[str], title: str, alt: str) -> Figure:
    """Per outcome (rows) and metric (columns): the difference as a dot, its interval as a line, and 0."""
    layers: list[dict[str, Any]] = [
        {
            "mark": {"type": "rule", "color": "#a0aec0", "strokeDash": [4, 3]},
            "encoding": {"x": {"datum": 0, "type": "quantitative"}},
        },
        {
            "mark": {"type": "rule", "strokeWidth": 2, "color": "#2b6cb0"},
            "encoding": {
                "y": {"field": "outcome", "type": "nominal", "title": None},
                "x": {
                    "field": "low",
                    "type": "quantitative",
                    "title": "all variables − factor model",
                    "axis": {"tickCount": 3},
                    "scale": {"nice": False, "padding": 6},
                },
                "x2": {"field": "high"},
            },
        },
        {
            "mark": {"type": "point", "filled": True, "size": 60, "color": "#1a365d"},
            "encoding": {
                "y": {"field": "outcome", "type": "nominal"},
                "x": {"field": "value", "type": "quantitative"},
                "tooltip": [
                    {"field": "outcome"},
                    {"field": "metric"},
                    {"field": "value", "format": ".4f"},
                    {"field": "low", "format": ".4f"},
                    {"field": "high", "format": ".4f"},
                ],
            },
        },
    ]
    spec = {
        "data": {"values": list(rows)},
        "facet": {
            "column": {
                "field": "metric",
                "type": "nominal",
                "title": None,
                "sort": list(metrics),
                "header": {"labelFontSize": 11, "labelLimit": 220},
            }
        },
        "spec": {"width": 200, "layer": layers},
        "resolve": {"scale": {"x": "independent"}},
    }
    return Figure(svg=svg(spec), caption=title, alt=alt)


def auc_figure(rows: Sequence[Mapping[str, Any]], *, title: str, alt: str) -> Figure:
    """Per model (rows): its ROC AUC as a dot with a line of ± one standard deviation over folds, and a dashed line
    at 0.5, the AUC of ranking at random (chance). Colour: the feature set."""
    lows = [float(r["low"]) for r in rows] + [CHANCE_AUC]
    highs = [float(r["high"]) for r in rows] + [CHANCE_AUC]
    domain = [math.floor(min(lows) * 20 - 0.5) / 20, min(1.0, math.ceil(max(highs) * 20 + 0.5) / 20)]
    y = {"field": "model", "type": "nominal", "title": None, "sort": None}
    x_scale = {"domain": domain, "nice": False}
    spec = {
        "width": 460,
        "data": {"values": list(rows)},
        "layer": [
            {
                "mark": {"type": "rule", "color": "#718096", "strokeDash": [5, 4], "strokeWidth": 1.5},
                "encoding": {"x": {"datum": CHANCE_AUC, "type": "quantitative", "scale": x_scale}},
            },
            {
                "mark": {"type": "rule", "strokeWidth": 2},
                "encoding": {
                    "y": y,
                    "x": {
                        "field": "low",
                        "type": "quantitative",
                        "title": "ROC AUC (dashed line: chance, 0.5)",
                        "scale": x_scale,
                    },
                    "x2": {"field": "high"},
                    "color": {"field": "feature set", "type": "nominal", "legend": None},
                },
            },
            {
                "mark": {"type": "point", "filled": True, "size": 70},
                "encoding": {
                    "y": y,
                    "x": {"field": "auc", "type": "quantitative"},
                    "color": {
                        "field": "feature set",
                        "type": "nominal",
                        "scale": {"range": ["#2b6cb0", "#dd6b20", "#805ad5"]},
                        "legend": {"orient": "bottom", "title": None},
                    },
                    "tooltip": [
                        {"field": "model"},
                        {"field": "auc", "format": ".3f", "title": "ROC AUC"},
                        {"field": "sd", "format": ".3f", "title": "sd over folds"},
                    ],
                },
            },
        ],
    }
    return Figure(svg=svg(spec), caption=title, alt=alt)


def importance_figure(
    rows: Sequence[Mapping[str, Any]],
    *,
    title: str,
    alt: str,
    x_title: str = "importance",
    color: str = "#2b6cb0",
) -> Figure:
    """Horizontal bars (mean importance), with whiskers (± one standard deviation over folds) for rows that give
    ``low`` and ``high``."""
    y = {"field": "variable", "type": "nominal", "sort": None, "title": None}
    layers: list[dict[str, Any]] = [
        {
            "mark": {"type": "bar", "color": color},
            "encoding": {
                "y": y,
                "x": {"field": "importance", "type": "quantitative", "title": x_title},
                "tooltip": [{"field": "variable"}, {"field": "importance", "format": ".4f"}],
            },
        }
    ]
    if any("low" in row for row in rows):
        layers.append(
            {
                "mark": {"type": "rule", "color": "#1a202c"},
                "encoding": {"y": y, "x": {"field": "low", "type": "quantitative"}, "x2": {"field": "high"}},
            }
        )
    spec = {"width": 460, "data": {"values": list(rows)}, "layer": layers}
    return Figure(svg=svg(spec), caption=title, alt=alt)


def privacy_cost_figure(rows: Sequence[Mapping[str, Any]], *, title: str, alt: str) -> Figure:
    """Per model pair (rows): the non-private tree's ROC AUC and the DP model's, as two dots joined by a line, and
    the AUC of chance (0.5) as a dashed line."""
    values = [float(r[k]) for r in rows for k in ("tree", "dp")] + [CHANCE_AUC]
    domain = [math.floor(min(values) * 20 - 0.5) / 20, min(1.0, math.ceil(max(values) * 20 + 0.5) / 20)]
    x_scale = {"domain": domain, "nice": False}
    y = {"field": "model", "type": "nominal", "title": None, "sort": None}
    spec = {
        "width": 420,
        "data": {"values": list(rows)},
        "layer": [
            {
                "mark": {"type": "rule", "color": "#718096", "strokeDash": [5, 4], "strokeWidth": 1.5},
                "encoding": {"x": {"datum": CHANCE_AUC, "type": "quantitative", "scale": x_scale}},
            },
            {
                "mark": {"type": "rule", "color": "#a0aec0", "strokeWidth": 2},
                "encoding": {
                    "y": y,
                    "x": {
                        "field": "tree",
                        "type": "quantitative",
                        "title": "ROC AUC (dashed: chance, 0.5)",
                        "scale": x_scale,
                    },
                    "x2": {"field": "dp"},
                },
            },
            {
                "transform": [{"fold": ["tree", "dp"], "as": ["which", "auc"]}],
                "mark": {"type": "point", "filled": True, "size": 80},
                "encoding": {
                    "y": y,
                    "x": {"field": "auc", "type": "quantitative"},
                    "color": {
                        "field": "which",
                        "type": "nominal",
                        "title": None,
                        "scale": {"domain": ["tree", "dp"], "range": ["#2b6cb0", "#805ad5"]},
                        "legend": {
                            "orient": "bottom",
                            "labelExpr": "datum.label == 'tree' ? 'non-private tree (exact)' : 'DP model (noisy)'",
                        },
                    },
                    "tooltip": [{"field": "model"}, {"field": "which"}, {"field": "auc", "format": ".3f"}],
                },
            },
        ],
    }
    return Figure(svg=svg(spec), caption=title, alt=alt)


def line_figure(
    rows: Sequence[Mapping[str, Any]],
    *,
    x: str,
    y: str,
    title: str,
    x_title: str,
    y_title: str,
    alt: str,
    x_type: str = "ordinal",
) -> Figure:
    spec = {
        "width": 640,
        "height": 260,
        "data": {"values": list(rows)},
        "mark": {"type": "line", "point": {"filled": True, "size": 60}, "color": "#2b6cb0"},
        "encoding": {
            "x": {
                "field": x,
                "type": x_type,
                "title": x_title,
                "sort": None,
                "axis": {"labelAngle": 0},
            },
            "y": {"field": y, "type": "quantitative", "title": y_title, "scale": {"zero": False}},
            "tooltip": [{"field": x}, {"field": y, "format": ".3f"}],
        },
    }
    return Figure(svg=svg(spec), caption=title, alt=alt)


__all__ = [
    "CHANCE_AUC",
    "auc_figure",
    "bar_figure",
    "forest_figure",
    "importance_figure",
    "line_figure",
    "privacy_cost_figure",
    "svg",
]
