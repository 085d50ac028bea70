"""Render a pipeline Report as one self-contained HTML page: inline CSS, images as data URIs, no network.

Every value is escaped; the page is well-formed HTML5 (checked by an HTML parser and by headless
Chromium in the tests). Sections without data are left out, so the page shows what was measured.
"""

from __future__ import annotations

import base64
import datetime
import html
from typing import Any

from yolograph.inspection.report import Report

_CSS = """
body{font-family:system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;margin:0;color:#1d2433;background:#f5f6f8}
header{background:#1d2433;color:#fff;padding:18px 32px}
header h1{margin:0;font-size:22px}header p{margin:4px 0 0;color:#c5cad6;font-size:13px}
main{padding:8px 32px 32px;max-width:1400px}
section{background:#fff;border:1px solid #dde1e8;border-radius:6px;margin:16px 0;padding:12px 20px}
h2{font-size:17px;margin:6px 0 10px}
table{border-collapse:collapse;font-size:13px;margin:6px 0}
th,td{border-bottom:1px solid #e6e8ee;padding:4px 10px;text-align:right;white-space:nowrap}
th{background:#f0f2f5}td.l,th.l{text-align:left}
code{background:#f0f2f5;padding:2px 5px;border-radius:3px;font-size:12px;word-break:break-all}
.cards{display:flex;flex-wrap:wrap;gap:12px}
.card{border:1px solid #dde1e8;border-radius:6px;padding:8px 14px;min-width:150px}
.card b{display:block;font-size:20px}.card span{color:#5b6475;font-size:12px}
.good{color:#127a3a}.bad{color:#b42318}
img{max-width:100%;height:auto;border:1px solid #e6e8ee}
figure{margin:8px 0}figcaption{font-size:12px;color:#5b6475}
.note{font-size:12px;color:#5b6475}
#passes td:nth-child(2){white-space:normal;word-break:break-all;max-width:300px}
#passes td:nth-child(7){white-space:normal;text-align:left;min-width:200px;max-width:320px;font-size:12px}
section{overflow-x:auto}
"""


def render_html(report: Report) -> str:
    """The whole page as a string."""
    parts = [_overview(report), _passes(report), _diff(report), _quantization(report), _pruning(report),
             _latency(report), _accuracy(report), _predictions(report), _notes(report)]
    generated = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return (
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
        f"<title>{_e(report.title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n"
        f"<header><h1>{_e(report.title)}</h1><p>yolograph pipeline report, generated {generated}</p></header>\n"
        f"<main>\n{''.join(p for p in parts if p)}</main>\n</body>\n</html>\n"
    )


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _section(section_id: str, title: str, body: str) -> str:
    return f"<section id=\"{section_id}\"><h2>{_e(title)}</h2>\n{body}</section>\n"


_LEFT = ' class="l"'


def _table(headers: list[str], rows: list[list[Any]], left: int = 1) -> str:
    """A table; the first `left` columns are left-aligned text, values are escaped."""
    def cells(values: list[Any], tag: str) -> str:
        return "".join(f"<{tag}{_LEFT if i < left else ''}>{_e(v)}</{tag}>" for i, v in enumerate(values))

    body = "".join(f"<tr>{cells(row, 'td')}</tr>" for row in rows)
    return f"<table><thead><tr>{cells(headers, 'th')}</tr></thead><tbody>{body}</tbody></table>\n"


def _figure(data: bytes, caption: str, mime: str = "image/png") -> str:
    uri = f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"
    return f"<figure><img src=\"{uri}\" alt=\"{_e(caption)}\"><figcaption>{_e(caption)}</figcaption></figure>\n"


def _card(value: str, label: str, css: str = "") -> str:
    return f"<div class=\"card\"><b class=\"{css}\">{_e(value)}</b><span>{_e(label)}</span></div>"


def _ratio(before: float, after: float) -> str:
    return f"{after / before:.3f}x" if before else "-"


def _overview(report: Report) -> str:
    passes = report.passes
    inp, out = passes["input"], passes["output"]
    cards = [_card(f"{inp['nodes']} → {out['nodes']}", "nodes"),
             _card(f"{inp['params'] / 1e6:.2f} M → {out['params'] / 1e6:.2f} M", "parameters"),
             _card(f"{inp['macs'] / 1e9:.2f} G → {out['macs'] / 1e9:.2f} G", "MACs"),
             _card(f"{passes['seconds']:.1f} s", f"{len(passes['passes'])} passes")]
    speed = [r for r in report.latency if r["model"] == "output" and r.get("speedup")]
    for row in speed:
        cards.append(_card(f"{row['speedup']:.2f}x", f"speed vs input ({row['backend']})",
                           "good" if row["speedup"] >= 1 else "bad"))
    for row in report.accuracy:
        if row["after"] is None:
            continue
        if row.get("reference"):  # agreement: 1.0 is a copy of the input model, so no good/bad colour
            cards.append(_card(f"{row['after']:.4f}", row["measure"]))
        elif row["before"] is not None:
            delta = 100 * (row["after"] - row["before"])
            cards.append(_card(f"{row['after']:.4f}", f"{row['measure']} ({delta:+.2f} pt)",
                               "good" if delta >= -0.5 else "bad"))
    target = f"<p>Target: <b>{_e(report.target)}</b></p>" if report.target else ""
    artifact = f"<p>Artifact: <code>{_e(report.artifact)}</code> ({_e(report.backend)})</p>" if report.artifact else ""
    body = (f"<p>Model: <code>{_e(report.source)}</code></p>{target}"
            f"<p>Pipeline: <code>{_e(report.pipeline)}</code></p>{artifact}"
            f"<div class=\"cards\">{''.join(cards)}</div>\n")
    return _section("overview", "Overview", body)


def _passes(report: Report) -> str:
    rows = []
    for r in report.passes["passes"]:
        b, a = r["before"], r["after"]
        rows.append([r["step"], r["spec"], f"{r['seconds']:.2f} s", f"{b['nodes']} → {a['nodes']}",
                     f"{b['params']:,} → {a['params']:,}", f"{b['macs'] / 1e9:.3f} → {a['macs'] / 1e9:.3f}",
                     r["contract"], r["verified"] or "not verified"])
    headers = ["#", "pass", "time", "nodes", "params", "GMACs", "contract", "verified"]
    return _section("passes", "Passes", _table(headers, rows, left=2))


def _diff(report: Report) -> str:
    diff = report.diff
    ops = sorted(diff["ops"].items(), key=lambda item: (-abs(item[1]), item[0]))
    added = [[op, f"+{n}"] for op, n in ops if n > 0]
    removed = [[op, str(n)] for op, n in ops if n < 0]
    body = (f"<p>Nodes {diff['nodes']['before']} → {diff['nodes']['after']}; params "
            f"{diff['params']['before']:,} → {diff['params']['after']:,} ({_ratio(diff['params']['before'], diff['params']['after'])}); "
            f"MACs {diff['macs']['before']:,} → {diff['macs']['after']:,} ({_ratio(diff['macs']['before'], diff['macs']['after'])}).</p>")
    body += "<div class=\"cards\">"
    body += f"<div>{_table(['ops added', 'count'], added)}</div>" if added else ""
    body += f"<div>{_table(['ops removed', 'count'], removed)}</div>" if removed else ""
    body += "</div>"
    if not ops:
        body += "<p>The op histogram is unchanged.</p>"
    narrowed = sum(1 for a, b in diff["conv_channels"].values() if a != b)
    body += (f"<p>Conv widths: {narrowed} of {len(diff['conv_channels'])} convs changed output channels"
             f"{' (see Pruning)' if narrowed else ''}.</p>\n")
    return _section("diff", "Graph diff", body)


def _quantization(report: Report) -> str:
    if not report.layer_error and not report.sensitivity:
        return ""
    body = ""
    if "layer_error" in report.figures:
        worst = sorted(report.layer_error, key=lambda r: r["sqnr_db"])[:5]
        body += _figure(report.figures["layer_error"], "Per-layer error (accumulated) of every Conv output")
        body += "<p>Lowest SQNR: " + ", ".join(f"<code>{_e(r['name'])}</code> {r['sqnr_db']:.1f} dB" for r in worst) + "</p>"
    if report.sensitivity:
        s = report.sensitivity
        body += _figure(report.figures["sensitivity"], "Sensitivity: model-output SQNR with only that layer quantized")
        rows = [[r["name"], r["op"], f"{r['output_sqnr_db']:.1f}", f"{r['boxes_sqnr_db']:.1f}",
                 f"{r['scores_sqnr_db']:.1f}", f"{r['own_sqnr_db']:.1f}"] for r in s["layers"][:10]]
        body += (f"<p>All layers quantized: output SQNR {s['full_output_sqnr_db']:.1f} dB on images {_e(s['images'])}. "
                 "The most sensitive layers:</p>")
        body += _table(["layer", "op", "output dB", "boxes dB", "scores dB", "own dB"], rows, left=2)
    return _section("quantization", "Quantization error per layer", body)


def _pruning(report: Report) -> str:
    if not report.pruning:
        return ""
    rows = [[name, before, after, f"{1 - after / before:.1%}" if before else "-"]
            for name, (before, after) in report.pruning.items()]
    body = _figure(report.figures["pruning"], "Kept and removed output channels per Conv")
    body += _table(["conv", "channels before", "after", "removed"], rows)
    return _section("pruning", "Pruning ratios per layer", body)


def _latency(report: Report) -> str:
    if not report.latency:
        return ""
    rows = [[f"{r['model']} model", r["backend"], f"{r['median_ms']:.2f}",
             f"{r['speedup']:.2f}x" if r.get("speedup") else "-"] for r in report.latency]
    body = _table(["model", "backend", "median ms", "speed vs input (ort)"], rows, left=2)
    if "latency" in report.figures:
        body += _figure(report.figures["latency"], "Median latency")
    return _section("latency", "Latency before / after", body)


def _accuracy(report: Report) -> str:
    if not report.accuracy:
        return ""
    rows = [[r["measure"], "1 (the reference)" if r.get("reference") else _fmt(r["before"]), _fmt(r["after"]),
             f"{100 * (r['after'] - r['before']):+.2f}" if r["after"] is not None and r["before"] is not None
             and not r.get("reference") else "-", r["images"]] for r in report.accuracy]
    return _section("accuracy", "Accuracy before / after",
                    _table(["measure", "input model", "output model", "change (points)", "images"], rows))


def _predictions(report: Report) -> str:
    if not report.predictions:
        return ""
    body = "".join(_figure(data, f"{name}: input model (left) vs output model (right)", "image/jpeg")
                   for name, data in report.predictions)
    return _section("predictions", "Predictions: input vs output model", body)


def _notes(report: Report) -> str:
    if not report.notes:
        return ""
    return _section("notes", "Notes", "".join(f"<p class=\"note\">{_e(n)}</p>" for n in report.notes))


def _fmt(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, float) else ("-" if value is None else str(value))
