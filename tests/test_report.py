"""The HTML report: one self-contained file, escaped data, and (when Chromium is installed) plots that
actually render in a headless browser.

Chromium: ``apt-get install -y chromium`` (Debian/Ubuntu package; the binary is ``chromium``); or point
``STEPLABEL_CHROMIUM`` at any Chrome/Chromium binary. Without one, the browser tests are skipped.
"""

from __future__ import annotations

import html
import os
import re
import shutil
import struct
import subprocess
import zlib
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pytest

from steplabel.storage.html_report import BAD, GOOD, svg_bar_chart, write_report
from steplabel.storage.store import ShardStore
from tests.factories import make_reject_rows, make_step_label_rows

EVIL_STEP = '<script>alert("pwned")</script> & "quotes" <img src=x onerror=alert(1)>'
EVIL_PROMPT = "</details><b>bold?</b> http://example.com/x.png"
EVIL_CLAIM = "<i>4 * 4 = 12</i> (left = 16, right = 12)"
CHART_IDS = ["chart-label-balance", "chart-first-error", "chart-answers", "chart-pass-rate", "chart-grader",
             "chart-mc", "chart-mc-by-step", "chart-steps", "chart-retention", "chart-judge", "chart-verification",
             "chart-cost"]


def _set(table: pa.Table, name: str, values: list, type_: pa.DataType) -> pa.Table:
    return table.set_column(table.schema.get_field_index(name), name, pa.array(values, type=type_))


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("report-store")
    store = ShardStore(root)
    rows = make_step_label_rows(8, shard_id="s0", steps_per_solution=3)
    completions = rows.column("completions").to_pylist()
    completions[1][1] = EVIL_STEP
    rows = _set(rows, "completions", completions, pa.list_(pa.string()))
    rows = _set(rows, "prompt", [EVIL_PROMPT] + rows.column("prompt").to_pylist()[1:], pa.string())
    rows = _set(rows, "judge_first_error", [-1, 0, 2, None, None, -1, 1, None], pa.int32())
    # solution 1 (labels TFF): the tools verified step 0 and refuted step 1, which its labeler called good
    verdicts = rows.column("tool_verdicts").to_pylist()
    verdicts[1] = ["verified", "refuted", "unknown"]
    rows = _set(rows, "tool_verdicts", verdicts, pa.list_(pa.string()))
    rows = _set(rows, "tool_evidence", [None, [None, EVIL_CLAIM, None]] + [None] * 6, pa.list_(pa.string()))
    rows = _set(rows, "labeler_labels", [None, [True, True, False]] + [None] * 6, pa.list_(pa.bool_()))
    store.stage("r1", "s0", {"step_labels": rows, "rejects": make_reject_rows(2, shard_id="s0")})
    store.commit("r1", config={"note": "<script>cfg</script>"}, config_hash="h1", code_version="t")
    return write_report(store, None, tmp_path_factory.mktemp("report") / "report.html", samples=8)


def test_one_self_contained_file(report):
    assert report.is_file() and sorted(p.name for p in report.parent.iterdir()) == ["report.html"]
    page = report.read_text(encoding="utf-8")
    # nothing fetched: no src/href to a URL, no stylesheet links, no CSS url(), no imports
    assert not re.search(r"""(?:src|href|xlink:href)\s*=\s*["']?\s*(?:[a-z]+:)?//""", page, re.I)
    assert "<link" not in page and "url(" not in page and "@import" not in page
    assert "default-src 'none'" in html.unescape(page)  # CSP: the browser would refuse any other source anyway
    for chart in CHART_IDS:
        assert f'id="{chart}"' in page
    assert page.count("<svg") >= len(CHART_IDS) and page.count('class="bar"') >= 10
    assert page.count('class="sample"') == 8


def test_tool_verification_is_shown(report):
    page = report.read_text(encoding="utf-8")
    figure = re.search(r'<figure class="chart" id="chart-verification">(.*?)</figure>', page, re.S).group(1)
    assert re.findall(r'data-label="(\w+)" data-value="(\d+)"', figure) == [
        ("verified", "1"), ("refuted", "1"), ("unknown", "22")]
    assert "The labeler&#x27;s own (MC) label agrees with 0.500 of the 2 verified or refuted steps" in figure
    assert "1 refuted steps the labeler called good" in figure and "Exported good but refuted: 0." in figure
    conflicts = re.search(r'<table class="rejects" id="conflicts">(.*?)</table>', page, re.S).group(1)
    assert re.sub(r"<[^>]+>", "|", conflicts).endswith(f"|s0-sol1||1||0.25||BAD||{html.escape(EVIL_CLAIM)}||")
    sample = re.search(r'<details class="sample"[^>]*>(?:(?!</details>).)*s0-sol1.*?</details>', page, re.S).group(0)
    step1 = re.search(r'<li class="step bad" data-step="1">.*?</li>', sample, re.S).group(0)
    assert "tool: refuted" in step1 and "labeler: GOOD" in step1 and html.escape(EVIL_CLAIM) in step1
    assert "<i>" not in page


def _samples(page: str) -> list[tuple[str, str]]:
    """(problem, solution id) of every sample of the browser, in page order."""
    return re.findall(r'<details class="sample"[^>]*data-problem="([^"]*)"><summary><span class="sid">([^<]*)<', page)


def test_sample_is_seeded_and_spans_problems(report, tmp_path):
    """8 solutions of 4 problems (2 each): 4 samples come from 4 problems, the same seed gives the same
    sample, and the sample is not simply the first rows."""
    store = ShardStore(next(report.parent.parent.glob("report-store*")))
    first = _samples(write_report(store, None, tmp_path / "a.html", samples=4, seed=3).read_text())
    assert len(first) == 4 and len({problem for problem, _ in first}) == 4
    assert first == _samples(write_report(store, None, tmp_path / "b.html", samples=4, seed=3).read_text())
    seeds = {tuple(_samples(write_report(store, None, tmp_path / f"{k}.html", samples=4, seed=k).read_text()))
             for k in range(4)}
    assert len(seeds) > 1 and [sid for _, sid in first] != [f"s0-sol{i}" for i in range(4)]
    page = (tmp_path / "a.html").read_text()
    assert "Samples: 4 solutions from 4 problems (seed 3)" in page


def test_researcher_sections_and_tool_filter(report):
    page = report.read_text(encoding="utf-8")
    # rows 0, 3, 6 have no error and are the correct answers: accuracy 3/8; problems (0,1), (2,3), (4,5), (6,7)
    answers = re.search(r'id="chart-answers">(.*?)</figure>', page, re.S).group(1)
    assert re.findall(r'data-label="(\w+)" data-value="(\d+)"', answers) == [("correct", "3"), ("wrong", "5")]
    assert "Accuracy 0.375 over 8 graded" in answers
    rates = re.search(r'id="chart-pass-rate">(.*?)</figure>', page, re.S).group(1)
    assert re.findall(r'data-label="([^"]+)" data-value="(\d+)"', rates) == [
        ("0%", "1"), ("1-24%", "0"), ("25-49%", "0"), ("50-74%", "3"), ("75-99%", "0"), ("100%", "0")]
    assert 'data-label="step 2"' in re.search(r'id="chart-mc-by-step">(.*?)</figure>', page, re.S).group(1)
    assert 'data-label="3 steps" data-value="8"' in page and 'data-label="exact" data-value="8"' in page
    assert 'id="reject-examples"' in page and "test reject 1 in s0" in page
    # only solution 1 has a step the tools refuted while its labeler called it good
    flagged = re.findall(r'data-tool-disagree="1" data-problem="[^"]*"><summary><span class="sid">([^<]*)<', page)
    assert flagged == ["s0-sol1"] and 'id="only-tool"' in page
    assert page.index('id="verification"') < page.index('class="charts"')  # near the top: in the screenshot


def test_data_is_escaped(report):
    page = report.read_text(encoding="utf-8")
    assert page.count("<script") == 1  # only the report's own script
    assert EVIL_STEP not in page and "<img" not in page and "<b>bold?</b>" not in page
    assert "&lt;script&gt;alert(&quot;pwned&quot;)&lt;/script&gt; &amp; &quot;quotes&quot;" in page
    assert "&lt;/details&gt;&lt;b&gt;bold?&lt;/b&gt;" in page and "&lt;script&gt;cfg&lt;/script&gt;" in page


def test_svg_bar_chart_escapes_and_scales():
    svg = svg_bar_chart([("<a>", 10), ("b", 5), ("c", 0)], title='t"')
    assert "<a>" not in svg and "&lt;a&gt;" in svg and 'aria-label="t&quot;"' in svg
    widths = [float(w) for w in re.findall(r'class="bar" x="\d+" y="\d+" width="([\d.]+)"', svg)]
    assert widths[0] == pytest.approx(2 * widths[1]) and widths[2] == 0
    assert 'data-empty="1"' in svg_bar_chart([], title="none")


# --------------------------------------------------------------------------------------------------------
# headless Chromium
# --------------------------------------------------------------------------------------------------------
def _chromium() -> str | None:
    candidates = [os.environ.get("STEPLABEL_CHROMIUM"), "chromium", "chromium-browser", "google-chrome",
                  "google-chrome-stable", "chrome", "headless_shell"]
    for name in candidates:
        if name and (path := shutil.which(name)):
            return path
    return None


needs_chromium = pytest.mark.skipif(
    _chromium() is None,
    reason="chromium not found (`make test` installs it as root; else `apt-get install -y chromium`, "
    "or set STEPLABEL_CHROMIUM)",
)


def _run_chromium(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    command = [
        _chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-extensions",
        "--hide-scrollbars", f"--user-data-dir={tmp_path / 'chromium-profile'}", *args,
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    return result


@needs_chromium
def test_chromium_renders_the_plots(report, tmp_path):
    dom = _run_chromium(tmp_path, "--dump-dom", report.as_uri()).stdout
    body = re.search(r"<body([^>]*)>", dom)
    assert body, dom[:500]
    attributes = dict(re.findall(r'data-([a-z-]+)="([^"]*)"', body.group(1)))
    assert attributes.get("rendered") == "ok", attributes  # every chart has bars with a laid-out width
    assert int(attributes["bars"]) >= 10 and attributes["samples"] == "8"
    for chart in CHART_IDS:
        figure = re.search(rf'<figure class="chart" id="{chart}"[^>]*data-drawn="(\d+)"', dom)
        assert figure and int(figure.group(1)) > 0, chart
    assert "8 of 8 shown" in dom  # the filter script ran
    assert 0 < int(attributes["verification-top"]) < 2000  # inside the screenshot window below
    assert dom.count("<script") == 1 and "<img" not in dom and "<b>bold?" not in dom  # data stayed text
    assert '&lt;script&gt;alert("pwned")&lt;/script&gt;' in dom


def _decode_png(data: bytes) -> tuple[int, int, int, list[bytes]]:
    """Minimal 8-bit RGB/RGBA non-interlaced PNG decoder (what Chromium writes): width, height, bpp, rows."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, header = 8, [], None
    while pos < len(data):
        (size,) = struct.unpack(">I", data[pos:pos + 4])
        kind, chunk = data[pos + 4:pos + 8], data[pos + 8:pos + 8 + size]
        pos += 12 + size
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", chunk)
        elif kind == b"IDAT":
            idat.append(chunk)
        elif kind == b"IEND":
            break
    width, height, depth, color, _, _, interlace = header
    assert depth == 8 and interlace == 0 and color in (2, 6), header
    bpp = 3 if color == 2 else 4
    raw, stride = zlib.decompress(b"".join(idat)), width * bpp
    prev, rows = bytearray(stride), []
    for y in range(height):
        kind = raw[y * (stride + 1)]
        line = bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
        if kind == 1:
            for i in range(bpp, stride):
                line[i] = (line[i] + line[i - bpp]) & 255
        elif kind == 2:
            line = bytearray((a + b) & 255 for a, b in zip(line, prev))
        elif kind == 3:
            for i in range(stride):
                left = line[i - bpp] if i >= bpp else 0
                line[i] = (line[i] + ((left + prev[i]) >> 1)) & 255
        elif kind == 4:
            for i in range(stride):
                a = line[i - bpp] if i >= bpp else 0
                b, c = prev[i], (prev[i - bpp] if i >= bpp else 0)
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
        rows.append(bytes(line))
        prev = line
    return width, height, bpp, rows


@needs_chromium
def test_chromium_screenshot_shows_the_bars(report, tmp_path):
    shot = tmp_path / "shot.png"
    _run_chromium(tmp_path, f"--screenshot={shot}", "--window-size=1200,2000", report.as_uri())
    assert shot.is_file() and shot.stat().st_size > 10_000
    width, height, bpp, rows = _decode_png(shot.read_bytes())
    assert (width, height) == (1200, 2000)
    colors = Counter(row[i:i + 3] for row in rows for i in range(0, len(row), bpp * 2))
    assert len(colors) > 20  # not blank
    good, bad = bytes.fromhex(GOOD[1:]), bytes.fromhex(BAD[1:])
    # the label-balance / first-error / retention bars are painted in these exact colours
    assert colors[good] > 500 and colors[bad] > 500, (colors[good], colors[bad], colors.most_common(5))
