"""The HTML report (`yolograph report`, `compile --html`): one self-contained page, checked by an HTML parser
and, where Chromium is installed, rendered by headless Chromium (page text, every image decodes)."""

from __future__ import annotations

import base64
import contextlib
import io
import json
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import cv2
import numpy as np
import pytest

from yolograph.cli import main

VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def run_cli(*args: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(args))
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def small_path(tmp_path_factory):
    from yolograph.frontends.builder import build_builtin
    from yolograph.ir.serialization import save_model

    path = tmp_path_factory.mktemp("report") / "yolov8n-160.onnx"
    save_model(build_builtin("n", num_classes=3, imgsz=160), path)
    return path


@pytest.fixture(scope="module")
def int8_report(small_path, coco_dir, tmp_path_factory):
    """The report of the ort-int8 target on the small model, with every section measured."""
    html = tmp_path_factory.mktemp("report") / "report.html"
    code, out, err = run_cli("report", str(small_path), "--target", "ort-int8", "--data", str(coco_dir),
                             "--calib-images", "0:2", "--eval-images", "32:34", "--bench", "3",
                             "--sensitivity-images", "32:33", "--predict-images", "2", "-o", str(html), "--json")
    assert code == 0, err
    return html, json.loads(out)


class PageChecker(HTMLParser):
    """Well-formedness (every element closed in order) and the page's images, text and links."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.errors: list[str] = []
        self.images: list[str] = []
        self.urls: list[str] = []
        self.text: list[str] = []
        self.scripts_with_src = 0

    def handle_starttag(self, tag, attrs):
        attributes = dict(attrs)
        if tag == "img":
            self.images.append(attributes.get("src") or "")
        for key in ("src", "href"):
            if attributes.get(key):
                self.urls.append(attributes[key])
        if tag == "script" and attributes.get("src"):
            self.scripts_with_src += 1
        if tag not in VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag):
        if tag in VOID:
            return
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes {self.stack[-1] if self.stack else 'nothing'}")
            return
        self.stack.pop()

    def handle_data(self, data):
        self.text.append(data)


def check_page(path: Path) -> PageChecker:
    source = path.read_text(encoding="utf-8")
    assert source.startswith("<!DOCTYPE html>")
    checker = PageChecker()
    checker.feed(source)
    checker.close()
    assert checker.errors == [] and checker.stack == []
    assert checker.scripts_with_src == 0 and "<link" not in source
    assert all(url.startswith("data:") for url in checker.urls), "the page must not load anything from outside"
    for src in checker.images:
        match = re.fullmatch(r"data:image/(png|jpeg);base64,([A-Za-z0-9+/=]+)", src)
        assert match, src[:60]
        picture = cv2.imdecode(np.frombuffer(base64.b64decode(match.group(2)), np.uint8), cv2.IMREAD_COLOR)
        assert picture is not None and picture.shape[0] > 50 and picture.shape[1] > 50
    try:
        import html5lib
    except ImportError:
        pass
    else:
        parser = html5lib.HTMLParser(strict=True)
        parser.parse(source)
    return checker


def test_int8_report_has_every_section(int8_report):
    path, result = int8_report
    checker = check_page(path)
    text = " ".join(checker.text)
    for heading in ("Overview", "Passes", "Graph diff", "Quantization error per layer", "Latency before / after",
                    "Accuracy before / after", "Predictions: input vs output model"):
        assert heading in text
    assert "Pruning ratios" not in text  # nothing was pruned
    for name in ("fold-bn", "cleanup", "fast-dfl", "insert-qdq", "calibrate", "QuantizeLinear", "ort-int8"):
        assert name in text
    # figures: per-layer error, sensitivity, latency; two prediction pictures
    assert result["sections"] == ["latency", "layer_error", "sensitivity"]
    assert len(checker.images) == 3 + 2 and len(result["predictions"]) == 2
    assert len(result["layer_error"]) == 63 and all(np.isfinite(r["sqnr_db"]) for r in result["layer_error"])
    assert [r["backend"] for r in result["latency"]] == ["ort", "ort"]
    measures = [r["measure"] for r in result["accuracy"]]
    assert measures[0] == "mAP50-95 (labels)" and measures[1].startswith("agreement with the input model")


def test_report_without_data_still_has_the_pipeline_sections(small_path, tmp_path):
    html = tmp_path / "r.html"
    code, out, err = run_cli("report", str(small_path), "-p", "fold-bn,cleanup", "--bench", "0", "-o", str(html))
    assert code == 0, err
    assert f"wrote    {html}" in out
    text = " ".join(check_page(html).text)
    assert "Passes" in text and "Graph diff" in text and "BatchNormalization" in text
    assert "Latency" not in text and "Predictions" not in text


def test_pruned_model_report_shows_ratios_per_layer(small_path, coco_dir, tmp_path):
    html = tmp_path / "pruned.html"
    code, out, err = run_cli("report", str(small_path), "-p",
                             f"fold-bn,cleanup,prune{{ratio=0.2,criterion=l1,reconstruct=none,images={coco_dir},count=2}}",
                             "--bench", "0", "--predict-images", "0", "-o", str(html), "--json")
    assert code == 0, err
    result = json.loads(out)
    assert result["pruning"] and all(after < before for before, after in result["pruning"].values())
    checker = check_page(html)
    text = " ".join(checker.text)
    assert "Pruning ratios per layer" in text and len(checker.images) == 1
    first = next(iter(result["pruning"]))
    assert first in text


def test_compile_html(small_path, coco_dir, tmp_path):
    html, model = tmp_path / "c.html", tmp_path / "m.onnx"
    code, out, err = run_cli("compile", str(small_path), "--target", "ort-fp32", "-o", str(model), "--html", str(html),
                             "--eval-data", str(coco_dir), "--eval-images", "32:33", "--predict-images", "1", "--json")
    assert code == 0, err
    assert json.loads(out)["html"] == str(html) and model.exists()
    text = " ".join(check_page(html).text)
    assert "Predictions" in text and "Accuracy before / after" in text and "Quantization error" not in text


def test_report_bad_output_is_one_line_before_any_work(small_path, tmp_path):
    for output in (tmp_path, small_path):  # a folder; the input model itself
        code, out, err = run_cli("report", str(small_path), "-p", "fold-bn", "-o", str(output))
        assert code == 2 and out == "" and err.startswith("error: ") and err.count("\n") == 1


def chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        found = shutil.which(name)
        if found:
            return found
    return None


PROBE = """<script>
window.addEventListener('load', () => {
  const images = Array.from(document.images);
  const probe = document.createElement('pre');
  probe.id = 'probe';
  probe.textContent = JSON.stringify({
    total: images.length,
    decoded: images.filter(i => i.complete && i.naturalWidth > 0 && i.naturalHeight > 0).length,
    sections: Array.from(document.querySelectorAll('section h2')).map(h => h.textContent),
    text: document.body.innerText.length});
  document.body.appendChild(probe);
});
</script>
"""


def test_report_renders_in_headless_chromium(int8_report, tmp_path):
    browser = chromium()
    if browser is None:
        pytest.skip("Chromium is not installed (apt-get install -y chromium)")
    path, _ = int8_report
    page = tmp_path / "probed.html"  # a copy with a probe script; the report itself has no script
    page.write_text(path.read_text(encoding="utf-8").replace("</body>", PROBE + "</body>"), encoding="utf-8")
    result = subprocess.run([browser, *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile'}",
                             "--virtual-time-budget=10000", "--dump-dom", page.as_uri()],
                            capture_output=True, text=True, timeout=120, check=False)
    match = re.search(r'<pre id="probe">(.*?)</pre>', result.stdout, re.DOTALL)
    assert match, result.stderr[-2000:]
    import html

    probe = json.loads(html.unescape(match.group(1)))
    assert probe["total"] == 5 and probe["decoded"] == probe["total"]
    assert probe["sections"][:3] == ["Overview", "Passes", "Graph diff"]
    assert "Quantization error per layer" in probe["sections"] and probe["text"] > 500
