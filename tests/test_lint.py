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


def test_the_public_api_documents_its_parameters_and_returns():
    """numpydoc sections on the functions a user calls (README, "From Python")."""
    import fastpg
    from fastpg.sweeps.spec import Sweep

    documented = [fastpg.run, fastpg.pretrain, fastpg.continue_run, fastpg.load, fastpg.load_sweep,
                  fastpg.api.run_batch, fastpg.RunData.query_complexity, fastpg.RunData.first_passage,
                  fastpg.RunData.to_pandas]
    for function in documented:
        doc = function.__doc__ or ""
        assert "Parameters\n" in doc and "Returns\n" in doc, function.__qualname__
    assert "Parameters\n" in Sweep.__doc__ and "Attributes\n" in fastpg.RunData.__doc__
