"""The lint of pyproject.toml's [tool.ruff] (pyflakes, pycodestyle, import order, bugbear,
pyupgrade) holds on the whole repository; it runs here, so the README's pytest and CI run it."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_ruff_check_passes():
    r = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", str(ROOT)], capture_output=True, text=True,
                       cwd=ROOT, timeout=300)
    assert r.returncode == 0, r.stdout[-5000:] + r.stderr[-2000:]
