"""Write the HTML report of the default INT8 pipeline (`--target ort-int8`) on yolov8n and screenshot it.

    python scripts/report_screenshot.py                 # docs/report_yolov8n_int8.jpg (+ the HTML in --work)
    python scripts/report_screenshot.py --work /tmp/r   # keep the HTML somewhere else

Verifies every pass's contract, calibrates on coco128 images 0-31, scores on 32-127, measures
sensitivity on 32-33, predicts three images; then renders the page in headless Chromium
(apt-get install -y chromium) at 1280 px wide, as tall as the page, and writes the screenshot.
Needs the shared data (../shared/data or $YOLOGRAPH_DATA).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--hide-scrollbars"]
WIDTH = 1280
HEIGHT_PROBE = ("<script>window.addEventListener('load',()=>{const p=document.createElement('pre');p.id='height';"
                "p.textContent=String(document.documentElement.scrollHeight);document.body.appendChild(p);});</script>")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=ROOT / "out" / "report",
                        help="where the HTML report goes (default out/report, ignored by git)")
    parser.add_argument("--output", type=Path, default=ROOT / "docs" / "report_yolov8n_int8.jpg")
    parser.add_argument("--bench", type=int, default=30)
    args = parser.parse_args()

    from yolograph.data import coco128, official_yolov8n

    browser = next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n)), None)
    if browser is None:
        print("error: Chromium is not installed; apt-get install -y chromium.", file=sys.stderr)
        return 2
    args.work.mkdir(parents=True, exist_ok=True)
    html = args.work / "report_yolov8n_int8.html"
    # Paths relative to the repository, so the page (and the screenshot) shows no machine-specific folders.
    model, data = (os.path.relpath(p, ROOT) for p in (official_yolov8n(), coco128()))
    command = [sys.executable, "-m", "yolograph.cli", "report", model, "--target", "ort-int8",
               "--data", data, "--calib-images", "0:32", "--eval-images", "32:128",
               "--sensitivity-images", "32:34", "--predict-images", "3", "--bench", str(args.bench), "--verify",
               "-o", str(html), "--json"]
    print("running:", " ".join(command), flush=True)
    result = json.loads(subprocess.run(command, check=True, stdout=subprocess.PIPE, text=True, cwd=ROOT).stdout)
    print(json.dumps({k: result[k] for k in ("latency", "accuracy")}, indent=1))

    with tempfile.TemporaryDirectory() as profile:
        probed = Path(profile) / "probed.html"
        probed.write_text(html.read_text(encoding="utf-8").replace("</body>", HEIGHT_PROBE + "</body>"), encoding="utf-8")
        dom = subprocess.run([browser, *CHROMIUM_FLAGS, f"--user-data-dir={profile}/a", f"--window-size={WIDTH},1000",
                              "--virtual-time-budget=10000", "--dump-dom", probed.as_uri()],
                             check=True, capture_output=True, text=True, timeout=180).stdout
        height = int(re.search(r'<pre id="height">(\d+)</pre>', dom).group(1))
        shot = Path(profile) / "shot.png"
        subprocess.run([browser, *CHROMIUM_FLAGS, f"--user-data-dir={profile}/b", f"--window-size={WIDTH},{height}",
                        "--virtual-time-budget=10000", f"--screenshot={shot}", html.as_uri()],
                       check=True, capture_output=True, timeout=180)
        _write_jpeg(shot, args.output)
    print(f"wrote    {args.output} ({WIDTH}x{height})")
    return 0


def _write_jpeg(source: Path, target: Path) -> None:
    """The screenshot as a JPEG (a tenth of the PNG's size: the page is mostly photos and plots), atomically."""
    import cv2

    from yolograph.ir.serialization import write_bytes_atomic

    image = cv2.imread(str(source), cv2.IMREAD_COLOR)
    ok, encoded = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 85])
    if not ok:
        raise SystemExit("error: could not encode the screenshot.")
    write_bytes_atomic(target, encoded.tobytes())


if __name__ == "__main__":
    raise SystemExit(main())
