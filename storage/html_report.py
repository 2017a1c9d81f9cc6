"""``steplabel report``: one self-contained HTML file with the plots of a version and a sample browser.

Nothing is loaded from the network: the plots are inline SVG generated here, the style and the small
filter script are inline, and a Content-Security-Policy forbids any other source. Every piece of data
(prompts, steps, ids, config values) is HTML-escaped, so a step containing ``<script>`` is shown as text.

The page, top to bottom: the version's metadata, the tool-verification section (verdicts, agreement with
the labeler, conflicts), the charts (label balance, first error, final-answer accuracy, per-problem pass
rate, grader layers, MC scores overall and by step index, steps per solution, retention, judge, cost), the
rejects with examples, and a sample browser: a seeded sample spread over problems
(:func:`steplabel.storage.selection.sample_rows`) with filters for errors, judge disagreements and
tool/MC disagreements.

After the page's script has run, ``document.body.dataset.rendered`` is ``"ok"`` when every chart has at
least one bar laid out with a non-zero width (or is an explicitly empty chart), ``"failed"`` otherwise;
``data-bars``, ``data-samples`` and ``data-verification-top`` (the verification section's offset in
pixels) on ``<body>`` are read by the headless-Chromium test.
"""

from __future__ import annotations

import datetime as _dt
import html
import json
from pathlib import Path
from typing import Any

__all__ = ["render_report", "svg_bar_chart", "write_report"]

# colours (also used by the tests to find the bars in a screenshot)
GOOD = "#2e9d4f"
BAD = "#d64545"
NEUTRAL = "#4a78c2"
ACCENT = "#c28a1d"
PURPLE = "#8a4fc2"
#: how many samples of the browser start expanded
OPEN_SAMPLES = 3


def _e(value: Any) -> str:
    """HTML-escape anything (text and attribute values)."""
    return html.escape("" if value is None else str(value), quote=True)


def _fmt(value: Any, digits: int = 2) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


# --------------------------------------------------------------------------------------------------------
# SVG charts
# --------------------------------------------------------------------------------------------------------
def svg_bar_chart(
    items: list[tuple[str, float]],
    *,
    title: str,
    color: str | list[str] = NEUTRAL,
    value_format: str = "{:,}",
    width: int = 560,
    bar_height: int = 20,
    label_width: int = 150,
) -> str:
    """A horizontal bar chart as an inline ``<svg>`` (one ``rect.bar`` per item, scaled to the maximum).

    Each bar carries ``data-label`` / ``data-value`` and a ``<title>`` tooltip. With no items, an empty
    chart with a note (``data-empty="1"`` on the svg)."""
    gap = 6
    value_width = 110
    plot_width = width - label_width - value_width
    if not items:
        return (
            f'<svg class="chart-svg" data-empty="1" role="img" aria-label="{_e(title)}: no data" '
            f'width="{width}" height="40" viewBox="0 0 {width} 40">'
            f'<text x="8" y="24" class="empty">no data</text></svg>'
        )
    height = len(items) * (bar_height + gap) + gap
    top = max((v for _, v in items if v is not None), default=0) or 1
    total = sum(v for _, v in items if v is not None)
    colors = color if isinstance(color, list) else [color] * len(items)
    parts = [
        f'<svg class="chart-svg" role="img" aria-label="{_e(title)}" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}">'
    ]
    for index, (label, value) in enumerate(items):
        value = value or 0
        y = gap + index * (bar_height + gap)
        length = plot_width * value / top
        if value and length < 1:
            length = 1.0
        shown = value_format.format(value)
        share = f" ({100 * value / total:.1f}%)" if total and isinstance(value, int) else ""
        parts.append(
            f'<text class="axis" x="{label_width - 6}" y="{y + bar_height * 0.72:.1f}" '
            f'text-anchor="end">{_e(label)}</text>'
            f'<rect class="bar" x="{label_width}" y="{y}" width="{length:.2f}" height="{bar_height}" '
            f'fill="{_e(colors[index % len(colors)])}" data-label="{_e(label)}" data-value="{_e(value)}">'
            f"<title>{_e(label)}: {_e(shown)}{_e(share)}</title></rect>"
            f'<text class="value" x="{label_width + length + 4:.2f}" y="{y + bar_height * 0.72:.1f}">'
            f"{_e(shown)}{_e(share)}</text>"
        )
    parts.append("</svg>")
    return "".join(parts)


def _figure(chart_id: str, title: str, svg: str, caption: str) -> str:
    empty = ' data-empty="1"' if 'data-empty="1"' in svg[:200] else ""
    return (
        f'<figure class="chart" id="{_e(chart_id)}"{empty}><h2>{_e(title)}</h2>{svg}'
        f"<figcaption>{_e(caption)}</figcaption></figure>"
    )


def _charts(stats: dict[str, Any]) -> list[str]:
    balance = stats["label_balance"]
    items = [("good steps", balance["positive"]), ("bad steps", balance["negative"])]
    colors = [GOOD, BAD]
    if balance["unlabelled"]:
        items.append(("unlabelled", balance["unlabelled"]))
        colors.append("#999999")
    figures = [
        _figure("chart-label-balance", "Label balance", svg_bar_chart(items, title="label balance", color=colors),
                f"{_fmt(balance['positive_fraction'], 3)} of {balance['steps']:,} steps are labelled good.")
    ]

    first = [("no error" if k == -1 else ("null" if k is None else f"step {k}"), v)
             for k, v in stats["first_error"].items()]
    first_colors = [GOOD if k == -1 else BAD for k in stats["first_error"]]
    figures.append(_figure(
        "chart-first-error", "First-error position",
        svg_bar_chart(first, title="first-error position histogram", color=first_colors),
        "Solutions by the index of their first wrong step (MC / labeler first_error; -1 = no error).",
    ))

    figures += _answer_figures(stats)

    mc = stats["mc_scores"]
    mc_items = [(f"{lo:.1f}–{hi:.1f}", n) for (lo, hi), n in zip(mc["bins"], mc["counts"])]
    mc_colors = [_mc_color((lo + hi) / 2) for lo, hi in mc["bins"]]
    figures.append(_figure(
        "chart-mc", "MC score distribution",
        svg_bar_chart(mc_items, title="MC score distribution", color=mc_colors),
        f"All {mc['total']:,} step MC scores in 10 bins (mean {_fmt(mc['mean'], 3)}"
        + (f"; {mc['nulls']:,} null" if mc["nulls"] else "") + ").",
    ))

    by_step = stats["mc_by_step"]
    figures.append(_figure(
        "chart-mc-by-step", "MC score by step index",
        svg_bar_chart([(f"step {k}", round(v["mc_mean"], 4) if v["mc_mean"] is not None else 0.0)
                       for k, v in by_step.items()], title="mean MC score by step index",
                      color=[_mc_color(v["mc_mean"]) for v in by_step.values()], value_format="{:.3f}"),
        "Mean MC score of the steps at each position; the share labelled good: "
        + ", ".join(f"step {k}: {_fmt(v['positive_fraction'], 2)}" for k, v in list(by_step.items())[:12]) + ".",
    ))
    lengths = stats["steps_per_solution"]
    figures.append(_figure(
        "chart-steps", "Steps per solution",
        svg_bar_chart([(f"{k} steps", n) for k, n in lengths["histogram"].items()], title="steps per solution"),
        f"Solutions by their number of steps (mean {_fmt(lengths['mean'], 2)}).",
    ))

    retention = stats["retention"]
    ret_items = [("labelled", retention["labelled"])] + [
        (f"rejected: {stage}", n) for stage, n in retention["rejected_by_stage"].items()
    ]
    figures.append(_figure(
        "chart-retention", "Retention by stage",
        svg_bar_chart(ret_items, title="retention by stage", color=[GOOD] + [BAD] * (len(ret_items) - 1)),
        f"Retention {_fmt(retention['retention'], 3)}: {retention['labelled']:,} labelled of "
        f"{retention['sampled']:,} items; rejects by stage and reason are listed below.",
    ))

    judge = stats["judge_agreement"]
    judge_items = (
        [("agree", judge["agree"]), ("judge earlier", judge["judge_earlier"]), ("judge later", judge["judge_later"])]
        if judge["judged"] else []
    )
    figures.append(_figure(
        "chart-judge", "Judge vs MC agreement",
        svg_bar_chart(judge_items, title="judge vs MC agreement", color=[GOOD, PURPLE, ACCENT]),
        "No solution was judged." if not judge["judged"] else
        f"Agreement on the first error: {_fmt(judge['fraction'], 3)} over {judge['judged']:,} judged solutions.",
    ))

    cost = stats["cost"]
    cost_items = [(name, c["rollouts_per_step"] or 0.0) for name, c in cost["by_labeler"].items()]
    token_items = [(name, c["tokens_per_step"] or 0.0) for name, c in cost["by_labeler"].items()]
    if cost_items:
        cost_items.append(("all (incl. rejects)", cost["rollouts_per_label"] or 0.0))
        token_items.append(("all (incl. rejects)", cost["tokens_per_label"] or 0.0))
    figures.append(_figure(
        "chart-cost", "Cost per label",
        svg_bar_chart(cost_items, title="rollouts per labelled step", color=NEUTRAL, value_format="{:,.2f}")
        + svg_bar_chart(token_items, title="tokens per labelled step", color=ACCENT, value_format="{:,.1f}"),
        f"Rollouts (blue) and generated tokens (amber) per labelled step, by labeler; totals "
        f"{cost['rollouts']:,} rollouts and {cost['tokens']:,} tokens, {cost['rollouts_rejected']:,} rollouts "
        "spent on rejected items.",
    ))
    return figures


def _answer_figures(stats: dict[str, Any]) -> list[str]:
    """Final-answer accuracy, per-problem pass rate and which grader layer decided each answer."""
    answers, problems = stats["answers"], stats["problems"]
    wrong = answers["graded"] - answers["correct"]
    items = [("correct", answers["correct"]), ("wrong", wrong)] + (
        [("ungraded", answers["ungraded"])] if answers["ungraded"] else [])
    layers = answers["by_grader_layer"]
    return [
        _figure("chart-answers", "Final-answer accuracy",
                svg_bar_chart(items, title="final answers", color=[GOOD, BAD, "#999999"]),
                f"Accuracy {_fmt(answers['accuracy'], 3)} over {answers['graded']:,} graded final answers of the "
                "policy's solutions."),
        _figure("chart-pass-rate", "Per-problem pass rate",
                svg_bar_chart(list(problems["pass_rate_histogram"].items()), title="per-problem pass rate",
                              color=[BAD, ACCENT, ACCENT, ACCENT, ACCENT, GOOD]),
                f"{problems['problems']:,} problems with {_fmt(problems['solutions_per_problem'], 1)} solutions each; "
                f"mean pass rate {_fmt(problems['mean_pass_rate'], 3)} (share of a problem's solutions whose final "
                "answer is correct)."),
        _figure("chart-grader", "Grader layers",
                svg_bar_chart([(layer, v["solutions"]) for layer, v in layers.items()], title="grader layers"),
                "Which layer of the grader decided each final answer: "
                + ", ".join(f"{layer}: {v['correct']:,} of {v['solutions']:,} correct" for layer, v in layers.items())
                + "."),
    ]


def _verification_figure(v: dict[str, Any]) -> str:
    """Tool verdicts per step, with the caption that says whether an exported good step was refuted."""
    items = [("verified", v["verified"]), ("refuted", v["refuted"]), ("unknown", v["unknown"])] \
        if v["steps_checked"] else []
    agreement, conflicts = v["agreement"], v["conflicts"]
    caption = "No tool verdicts (verification was off)." if not v["steps_checked"] else (
        f"{v['steps_checked']:,} steps of {v['solutions_checked']:,} solutions checked by the tools; "
        f"{v['refuted_solutions']:,} solutions have a refuted step. The labeler's own (MC) label agrees with "
        f"{_fmt(agreement['fraction'], 3)} of the {agreement['decisive']:,} verified or refuted steps. Conflicts: "
        f"{conflicts['refuted_but_labeler_good']:,} refuted steps the labeler called good, "
        f"{conflicts['verified_but_labeler_bad']:,} verified steps it called bad; {v['relabelled_steps']:,} "
        f"steps relabelled by the tools. Exported good but refuted: {v['good_but_refuted']:,}."
    )
    return _figure("chart-verification", "Verdicts per step",
                   svg_bar_chart(items, title="tool verdicts per step", color=[GOOD, BAD, "#999999"]), caption)


def _conflicts_table(v: dict[str, Any]) -> str:
    """The first refuted steps the labeler called good, and what was exported for them."""
    examples = v["conflicts"]["examples"]
    if not examples:
        return "<p>No step the tools refuted was called good by the labeler.</p>"
    rows = "".join(
        f"<tr><td class=\"sid\">{_e(ex['solution_id'])}</td><td>{_e(ex['step'])}</td><td>{_e(_fmt(ex['mc']))}</td>"
        f"<td>{'GOOD' if ex['label'] else 'BAD'}</td><td>{_e(ex['evidence'])}</td></tr>"
        for ex in examples
    )
    return ('<table class="rejects" id="conflicts"><tr><th>solution</th><th>step</th><th>MC</th>'
            f"<th>exported label</th><th>refuted claim</th></tr>{rows}</table>")


def _reject_examples(retention: dict[str, Any]) -> str:
    """The first rejected items, with what went wrong."""
    if not retention["examples"]:
        return ""
    rows = "".join(
        f"<tr><td class=\"sid\">{_e(ex['item_id'])}</td><td>{_e(ex['stage'])}</td><td>{_e(ex['reason'])}</td>"
        f"<td>{_e(ex['detail'])}</td></tr>"
        for ex in retention["examples"]
    )
    return ('<h3>Rejected items (examples)</h3><table class="rejects" id="reject-examples"><tr><th>item</th>'
            f"<th>stage</th><th>reason</th><th>detail</th></tr>{rows}</table>")


def _mc_color(mc: float | None) -> str:
    """Red (0) through amber to green (1) for an MC score; grey when unknown."""
    if mc is None:
        return "#9e9e9e"
    mc = min(max(float(mc), 0.0), 1.0)
    return f"hsl({int(round(120 * mc))}, 65%, 42%)"


# --------------------------------------------------------------------------------------------------------
# sample browser
# --------------------------------------------------------------------------------------------------------
def _at(values: list[Any] | None, index: int) -> Any:
    if values is None or index >= len(values):
        return None
    return values[index]


def _sample_html(row: dict[str, Any], *, open_: bool = False) -> str:
    first_error = row.get("first_error")
    judge = row.get("judge_first_error")
    disagree = judge is not None and judge != first_error
    has_error = first_error is not None and first_error >= 0
    tool_disagree = False
    steps = []
    for index, step in enumerate(row.get("completions") or []):
        good = _at(row.get("labels"), index)
        mc = _at(row.get("mc_scores"), index)
        correct, total = _at(row.get("mc_correct"), index), _at(row.get("mc_total"), index)
        kind = "unknown" if good is None else ("good" if good else "bad")
        mark = "?" if good is None else ("GOOD" if good else "BAD")
        mc_text = "–" if mc is None else f"{mc:.2f}"
        counts = f" ({correct}/{total})" if correct is not None and total is not None else ""
        judge_flag = ' <span class="judge">judge: first error</span>' if disagree and judge == index else ""
        tool = _at(row.get("tool_verdicts"), index)
        tool_flag = f' <span class="tool {_e(tool)}">tool: {_e(tool)}</span>' if tool in ("verified", "refuted") else ""
        evidence = _at(row.get("tool_evidence"), index)
        if tool == "refuted" and evidence:
            tool_flag += f' <span class="claim">refuted claim: {_e(evidence)}</span>'
        own = _at(row.get("labeler_labels") or row.get("labels"), index)
        tool_disagree |= (tool == "refuted" and own is True) or (tool == "verified" and own is False)
        if own is not None and good is not None and own != good:
            tool_flag += f' <span class="tag">labeler: {"GOOD" if own else "BAD"}</span>'
        steps.append(
            f'<li class="step {kind}" data-step="{index}">'
            f'<span class="mark">{mark}</span>'
            f'<span class="mc" style="background:{_mc_color(mc)}" title="MC score{_e(counts)}">{_e(mc_text)}</span>'
            f'<span class="text">{_e(step)}</span>{judge_flag}{tool_flag}</li>'
        )
    verdict = {True: "correct", False: "wrong"}.get(row.get("final_correct"), "ungraded")
    summary = (
        f'<span class="sid">{_e(row.get("solution_id"))}</span> <span class="tag">problem '
        f'{_e(row.get("problem_id"))}</span> '
        f'<span class="tag">{_e(row.get("labeler"))}</span> '
        f'<span class="tag {"bad" if has_error else "good"}">'
        f'{"first error: step " + _e(first_error) if has_error else "no error"}</span>'
        + (f' <span class="tag judge">judge: {_e(judge)}</span>' if disagree else "")
        + (' <span class="tag bad">tool vs MC</span>' if tool_disagree else "")
        + f' <span class="tag">{_e(verdict)}</span>'
    )
    return (
        f'<details class="sample"{" open" if open_ else ""} data-first-error="{_e(first_error)}" '
        f'data-has-error="{int(has_error)}" data-disagree="{int(disagree)}" '
        f'data-tool-disagree="{int(tool_disagree)}" data-problem="{_e(row.get("problem_id"))}">'
        f"<summary>{summary}</summary>"
        f'<div class="prompt">{_e(row.get("prompt"))}</div><ol class="steps" start="0">{"".join(steps)}</ol>'
        f'<div class="meta">final answer <code>{_e(row.get("final_answer"))}</code> vs reference '
        f'<code>{_e(row.get("reference_answer"))}</code>: {_e(verdict)} ({_e(row.get("grader_layer"))}); '
        f'rollouts {_e(row.get("rollouts_used"))}, tokens {_e(row.get("tokens_generated"))}'
        + (f'<br>judge rationale: {_e(row.get("judge_rationale"))}' if row.get("judge_rationale") else "")
        + "</div></details>"
    )


# --------------------------------------------------------------------------------------------------------
# page
# --------------------------------------------------------------------------------------------------------
_CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:24px auto;max-width:1150px;
color:#222;padding:0 16px}
h1{font-size:22px;margin:0 0 4px} h2{font-size:16px;margin:0 0 8px}
.meta-table{border-collapse:collapse;margin:12px 0 20px} .meta-table td{padding:2px 12px 2px 0;vertical-align:top}
.meta-table td:first-child{color:#666}
.charts{display:grid;grid-template-columns:repeat(auto-fill,minmax(560px,1fr));gap:18px}
figure.chart{margin:0;padding:12px;border:1px solid #ddd;border-radius:6px;background:#fafafa}
figcaption{color:#555;font-size:12px;margin-top:6px}
svg .axis,svg .value,svg .empty{font-size:12px;fill:#333} svg .empty{fill:#888}
table.rejects{border-collapse:collapse;margin:10px 0} table.rejects td,table.rejects th{border:1px solid #ddd;
padding:3px 8px;text-align:left}
.controls{position:sticky;top:0;background:#fff;padding:8px 0;border-bottom:1px solid #ddd;z-index:1}
.controls input[type=search]{width:320px;padding:4px}
details.sample{border:1px solid #ddd;border-radius:6px;margin:8px 0;padding:6px 10px}
details.sample summary{cursor:pointer} .sid{font-family:monospace}
.tag{display:inline-block;padding:0 6px;border-radius:8px;background:#eee;font-size:12px;margin-left:4px}
.tag.bad{background:#fbdada} .tag.good{background:#d8f0de} .tag.judge,.judge{background:#ead9f7}
.prompt{font-weight:600;margin:8px 0;white-space:pre-wrap}
ol.steps{list-style:none;padding:0;margin:0} li.step{margin:3px 0;padding:4px 6px;border-radius:4px;
white-space:pre-wrap;border-left:5px solid transparent}
li.step.good{background:#e9f6ec;border-left-color:""" + GOOD + """} li.step.bad{background:#fdeaea;border-left-color:""" + BAD + """}
li.step.unknown{background:#f1f1f1}
.mark{display:inline-block;width:42px;font-weight:700;font-size:12px} li.good .mark{color:""" + GOOD + """}
li.bad .mark{color:""" + BAD + """}
.mc{display:inline-block;min-width:36px;text-align:center;color:#fff;border-radius:3px;font-size:12px;
margin-right:8px;padding:0 3px}
.meta{color:#555;font-size:12px;margin-top:6px}
.tool{font-size:12px;padding:0 4px;border-radius:3px} .tool.verified{color:""" + GOOD + """}
.tool.refuted{color:#fff;background:""" + BAD + """} .claim{color:""" + BAD + """;font-size:12px}
section.verification{margin:12px 0 20px;padding:12px;border:2px solid """ + NEUTRAL + """;border-radius:6px}
section.verification figure.chart{border:none;padding:0;background:none} h3{font-size:14px;margin:10px 0 4px}
"""

_JS = """
(function () {
  var body = document.body;
  var charts = document.querySelectorAll("figure.chart");
  var ok = charts.length > 0, bars = 0;
  Array.prototype.forEach.call(charts, function (fig) {
    var rects = fig.querySelectorAll("svg rect.bar"), drawn = 0;
    Array.prototype.forEach.call(rects, function (r) {
      if (r.getBoundingClientRect().width > 0) { drawn += 1; }
    });
    bars += rects.length;
    fig.dataset.drawn = String(drawn);
    if (!drawn && fig.dataset.empty !== "1") { ok = false; }
  });
  var samples = Array.prototype.slice.call(document.querySelectorAll("details.sample"));
  var box = document.getElementById("filter");
  var onlyBad = document.getElementById("only-bad");
  var onlyDisagree = document.getElementById("only-disagree");
  var onlyTool = document.getElementById("only-tool");
  var shown = document.getElementById("shown");
  function apply() {
    var q = box.value.trim().toLowerCase(), n = 0;
    samples.forEach(function (s) {
      var show = (!q || s.textContent.toLowerCase().indexOf(q) >= 0)
        && (!onlyBad.checked || s.dataset.hasError === "1")
        && (!onlyDisagree.checked || s.dataset.disagree === "1")
        && (!onlyTool.checked || s.dataset.toolDisagree === "1");
      s.hidden = !show;
      if (show) { n += 1; }
    });
    shown.textContent = n + " of " + samples.length + " shown";
  }
  box.addEventListener("input", apply);
  onlyBad.addEventListener("change", apply);
  onlyDisagree.addEventListener("change", apply);
  onlyTool.addEventListener("change", apply);
  apply();
  var verification = document.getElementById("verification");
  body.dataset.verificationTop = String(Math.round(verification.getBoundingClientRect().top));
  body.dataset.bars = String(bars);
  body.dataset.samples = String(samples.length);
  body.dataset.rendered = ok ? "ok" : "failed";
})();
"""

_CSP = "default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; img-src data:"


def render_report(
    summary: dict[str, Any], stats: dict[str, Any], rows: list[dict[str, Any]], *, config: dict | None = None,
    seed: int = 0,
) -> str:
    """The report's HTML for a version's ``summary`` (``ShardStore.summary``), ``stats``
    (:func:`steplabel.storage.inspection.version_stats`) and sample ``rows`` (dicts of ``step_labels`` rows,
    drawn with ``seed``)."""
    version = summary.get("version")
    answers = stats["answers"]
    meta_rows = [
        ("dataset", summary.get("root")),
        ("version", f"{version} (of {', '.join(summary.get('versions') or [])})"),
        ("created", summary.get("created_at")),
        ("runs", ", ".join(summary.get("run_ids") or [])),
        ("config hash", summary.get("config_hash")),
        ("code version", summary.get("code_version")),
        ("models", "; ".join(f"{role}: {', '.join(names)}" for role, names in stats["models"].items() if names)),
        ("solutions", f"{_fmt(summary.get('solutions'))} of {_fmt(stats['problems']['problems'])} problems"),
        ("steps", _fmt(summary.get("steps"))),
        ("final-answer accuracy", f"{_fmt(answers['accuracy'], 3)} ({_fmt(answers['correct'])} of "
                                  f"{_fmt(answers['graded'])} graded)"),
        ("rejects", _fmt(summary.get("rejects"))),
        ("rollouts / tokens", f"{_fmt(summary.get('rollouts'))} / {_fmt(summary.get('tokens'))}"),
        ("labelers", ", ".join(f"{k}: {v:,}" for k, v in stats["labelers"].items())),
    ]
    meta = "".join(f"<tr><td>{_e(k)}</td><td>{_e(v)}</td></tr>" for k, v in meta_rows)
    config_json = json.dumps(config or {}, indent=1, sort_keys=True, default=str)
    reject_rows = "".join(
        f"<tr><td>{_e(stage)}</td><td>{_e(reason)}</td><td>{n:,}</td></tr>"
        for stage, by_reason in stats["retention"]["rejected"].items()
        for reason, n in by_reason.items()
    )
    rejects = (
        f'<table class="rejects"><tr><th>stage</th><th>reason</th><th>items</th></tr>{reject_rows}</table>'
        if reject_rows else "<p>No rejects.</p>"
    )
    samples = "".join(_sample_html(row, open_=index < OPEN_SAMPLES) for index, row in enumerate(rows))
    problems = len({row.get("problem_id") for row in rows})
    generated = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f'<meta http-equiv="Content-Security-Policy" content="{_e(_CSP)}">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>steplabel report: {_e(version)}</title><style>{_CSS}</style></head>\n<body>"
        f"<h1>steplabel report: {_e(version)}</h1>"
        f'<div class="meta">generated {_e(generated)}</div>'
        f'<table class="meta-table">{meta}</table>'
        f'<details><summary>config</summary><pre>{_e(config_json)}</pre></details>'
        '<section id="verification" class="verification"><h2>Tool verification</h2>'
        f'{_verification_figure(stats["verification"])}'
        "<h3>Refuted steps the labeler called good (examples)</h3>"
        f"{_conflicts_table(stats['verification'])}</section>"
        f'<section class="charts">{"".join(_charts(stats))}</section>'
        f"<h2 style=\"margin-top:20px\">Rejects by stage and reason</h2>{rejects}"
        f"{_reject_examples(stats['retention'])}"
        f'<section id="samples"><h2>Samples: {len(rows)} solutions from {problems} problems (seed {seed})</h2>'
        '<p class="meta">A seeded random sample that spreads over problems: problems are visited in a random '
        "order and each gives one solution per round. <code>steplabel report --seed N</code> draws another.</p>"
        '<div class="controls"><input type="search" id="filter" placeholder="filter by text (id, prompt, steps)"> '
        '<label><input type="checkbox" id="only-bad"> only with an error</label> '
        '<label><input type="checkbox" id="only-disagree"> only judge disagreements</label> '
        '<label><input type="checkbox" id="only-tool"> only tool/MC disagreements</label> '
        '<span id="shown"></span></div>'
        f"{samples}</section>"
        f"<script>{_JS}</script></body></html>\n"
    )


def write_report(
    store: Any, version: str | None, out_path: str | Path, samples: int = 50, seed: int = 0
) -> Path:
    """Write the HTML report of ``version`` (default latest) of ``store`` to ``out_path``; return the path.
    ``samples`` solutions are drawn with ``seed``, spread over problems.

    Raises :class:`steplabel.storage.store.StoreError` for a store without that version."""
    from steplabel.storage.inspection import version_stats
    from steplabel.storage.schema import STEP_LABELS
    from steplabel.storage.selection import sample_rows

    summary = store.summary(version)
    if summary["version"] is None:
        from steplabel.storage.store import StoreError

        raise StoreError(f"no committed version in store {store.root}")
    name = summary["version"]
    stats = version_stats(store, name)
    rows = sample_rows(store.scan(STEP_LABELS, name), max(int(samples), 0), seed).to_dicts()
    page = render_report(summary, stats, rows, config=store.manifest(name).config, seed=seed)
    out = Path(out_path)
    if out.parent and not out.parent.exists():
        out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(page, encoding="utf-8")
    tmp.replace(out)
    return out
