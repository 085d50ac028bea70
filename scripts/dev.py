#!/usr/bin/env python3
"""Developer entry point that needs only python3: creates .venv, installs yolograph, runs a task.

    python3 scripts/dev.py demo            # compile the built-in YOLOv8n for --target ort-int8
    python3 scripts/dev.py test [ARGS]     # the whole test suite (pytest ARGS)
    python3 scripts/dev.py yolograph ARGS  # any CLI command inside the venv
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENV = ROOT / ".venv"
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
PYTHON = BIN / "python"
EXTRAS = "test,tvm,plot,openvino,train,bench"
# PyTorch (the train extra) is pinned to the CPU build these machines carry (torch 2.13.0+cpu): the
# package index's default Linux build pulls several GB of CUDA libraries.
TORCH = "torch==2.13.0"


def ensure_venv() -> None:
    """Create the venv and (re)install when pyproject.toml changed since the last install."""
    if not PYTHON.exists():
        print(f"[dev] creating {VENV}", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
    stamp = VENV / ".yolograph-install"
    wanted = hashlib.sha256((ROOT / "pyproject.toml").read_bytes() + (EXTRAS + TORCH).encode()).hexdigest()
    if stamp.exists() and stamp.read_text() == wanted:
        return
    print("[dev] installing yolograph and its dependencies into .venv (first run takes a few minutes)", flush=True)
    log = VENV / "install.log"
    pip = [str(PYTHON), "-m", "pip", "install", "--disable-pip-version-check"]
    with log.open("w") as handle:  # setuptools' build chatter goes to the log, shown only on failure
        for args in (["--upgrade", "pip"], [TORCH], ["-e", f"{ROOT}[{EXTRAS}]"]):
            if subprocess.run(pip + args, stdout=handle, stderr=subprocess.STDOUT).returncode != 0:
                sys.stdout.write(log.read_text()[-5000:])
                raise SystemExit(f"[dev] installing failed; the full log is {log}")
    stamp.write_text(wanted)


def run(args: list[str]) -> int:
    return subprocess.run(args, cwd=ROOT).returncode


def demo() -> int:
    """Compile the built-in YOLOv8n for ONNX Runtime INT8 with one --target, show the cost, write a report."""
    out = ROOT / "out"
    data = Path(os.environ.get("YOLOGRAPH_DATA", ROOT.parent / "shared" / "data")) / "coco128"
    cli = [str(PYTHON), "-m", "yolograph.cli"]
    if (data / "images").is_dir():
        target = ["--target", "ort-int8", "--data", str(data), "--calib-images", "0:8"]
    else:
        print(f"[dev] {data} not found: compiling the float target only", flush=True)
        target = ["--target", "ort-fp32"]
    # The built-in model has random weights: latency and the report's graphs mean something, its mAP
    # does not (benchmarks/ measure the trained yolov8n).
    code = run(cli + ["compile", *target, "-o", str(out / "yolov8n.onnx"), "--bench", "20"])
    if code == 0:
        code = run(cli + ["diff", "yolov8n", str(out / "yolov8n.onnx")])
    return code


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in ("demo", "test", "yolograph"):
        print(__doc__)
        return 2
    ensure_venv()
    task, rest = argv[0], argv[1:]
    if task == "demo":
        return demo()
    if task == "test":
        return run([str(PYTHON), "-m", "pytest", "-q", *rest])
    return run([str(PYTHON), "-m", "yolograph.cli", *rest])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
