"""Build ``vision-runtime``, the small wheel that ships the torch-free edge runtime alone to a device.

    .venv/bin/python scripts/build_runtime_wheel.py            # -> dist/vision_runtime-<version>-py3-none-any.whl
    pip install dist/vision_runtime-*.whl                       # on the device: numpy, onnxruntime, Pillow,
                                                                # OpenCV (headless) and PyYAML come with it

The wheel holds ``vision/__init__.py`` and ``vision/runtime/`` only (nothing of training, export or curation);
its dependencies are exactly :data:`DEPENDENCIES`; bundles by ``models:/NAME@ALIAS`` load from an MLflow server
(REST) or a local SQLite store without MLflow on the device. The staging folder gets its own ``pyproject.toml`` and ``pip wheel
--no-deps`` builds it (with the setuptools of the running interpreter when it has one, so no download is needed).
"""
from __future__ import annotations

import argparse
import ast
import importlib.util
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
NAME = "vision-runtime"
DEPENDENCIES = ["numpy>=1.26", "onnxruntime>=1.20", "pillow>=10", "opencv-python-headless>=4.8", "pyyaml>=6"]
ALLOWED_IMPORTS = {"numpy", "onnxruntime", "PIL", "cv2", "yaml", "vision"}

PYPROJECT = """[build-system]
requires = ["setuptools>=68"]
build-backend = "setuptools.build_meta"

[project]
name = "{name}"
version = "{version}"
description = "Torch-free reference runtime for vision-toolkit edge bundles (ONNX fp32/int8 + bundle.json)."
readme = "README.md"
requires-python = ">=3.10"
dependencies = {deps}

[project.scripts]
vision-runtime = "vision.runtime.__main__:main"
vision-track = "vision.runtime.track:main"

[tool.setuptools]
packages = ["vision", "vision.runtime"]
"""

README = """# vision-runtime

The reference edge runtime of vision-toolkit alone: runs edge bundles (ONNX fp32 + int8, `bundle.json` with a
sha256 per file and an integrity hash) with numpy, ONNX Runtime, Pillow, OpenCV (headless) and PyYAML. No torch.

    python -m vision.runtime BUNDLE_DIR images/ --out results.jsonl
    python -m vision.runtime BUNDLE_DIR clip.mp4 --out dets.jsonl --privacy
    python -m vision.runtime models:/NAME@production img.jpg --tracking-uri http://mlflow:5000
"""


def _version() -> str:
    tree = ast.parse((REPO / "vision" / "__init__.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "__version__" for t in node.targets):
            return ast.literal_eval(node.value)
    raise SystemExit("vision/__init__.py defines no __version__")


def check_imports(files: list[Path]) -> None:
    """Every top-level import of the runtime is the standard library or an allowed dependency (never torch)."""
    bad = []
    for f in files:
        for node in ast.walk(ast.parse(f.read_text(), str(f))):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            for n in names:
                top = n.split(".")[0]
                if top in ALLOWED_IMPORTS or top in sys.stdlib_module_names or top == "__future__":
                    if top == "vision" and not (n == "vision" or n.startswith("vision.runtime")):
                        bad.append(f"{f.relative_to(REPO)}: imports {n} (outside vision.runtime)")
                    continue
                bad.append(f"{f.relative_to(REPO)}: imports {n}")
    if bad:
        raise SystemExit("the runtime wheel would need more than its dependencies:\n  " + "\n  ".join(bad))


def stage(dest: Path) -> Path:
    """Lay out the wheel's sources in ``dest``: pyproject.toml, README.md, vision/__init__.py, vision/runtime/."""
    files = [REPO / "vision" / "__init__.py", *sorted((REPO / "vision" / "runtime").glob("*.py"))]
    check_imports(files)
    (dest / "vision" / "runtime").mkdir(parents=True)
    for f in files:
        shutil.copy2(f, dest / f.relative_to(REPO))
    (dest / "pyproject.toml").write_text(PYPROJECT.format(name=NAME, version=_version(),
                                                          deps=repr(DEPENDENCIES).replace("'", '"')))
    (dest / "README.md").write_text(README)
    return dest


def build(out_dir: str | Path = REPO / "dist", python: str = sys.executable) -> Path:
    """Build the wheel into ``out_dir``; returns its path."""
    out_dir = Path(out_dir).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="vision-runtime-wheel-") as tmp:
        src = stage(Path(tmp) / "src")
        wheels = Path(tmp) / "wheels"
        cmd = [python, "-m", "pip", "wheel", "--no-deps", "--wheel-dir", str(wheels), str(src)]
        if importlib.util.find_spec("setuptools") is not None:
            cmd.insert(4, "--no-build-isolation")  # build with our setuptools: nothing to download
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            raise SystemExit(f"pip wheel failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
        built = sorted(wheels.glob("vision_runtime-*.whl"))
        if len(built) != 1:
            raise SystemExit(f"expected one vision_runtime wheel, pip produced {[p.name for p in built]}")
        final = out_dir / built[0].name
        shutil.copyfile(built[0], final)
    return final


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out-dir", default=str(REPO / "dist"), help="where the wheel goes (default: dist/)")
    args = ap.parse_args(argv)
    print(build(args.out_dir))
    return 0


if __name__ == "__main__":
    sys.exit(main())
