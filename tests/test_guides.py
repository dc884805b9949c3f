"""The user guides in guides/ and the README's tour are executable: their Python blocks
run as one script each."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
GUIDES = [*sorted((ROOT / "guides").glob("*.md")), ROOT / "README.md"]


def python_blocks(path: Path) -> str:
    return "\n".join(re.findall(r"```python\n(.*?)```", path.read_text(), flags=re.S))


@pytest.mark.slow
@pytest.mark.parametrize("guide", GUIDES, ids=[g.stem for g in GUIDES])
def test_guide_code_runs(guide: Path, tmp_path: Path) -> None:
    script = tmp_path / "guide.py"
    script.write_text(python_blocks(guide))
    env = dict(os.environ, PYTHONWARNINGS="ignore", MPLBACKEND="Agg")
    result = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]


def test_every_guide_has_code() -> None:
    assert GUIDES
    for guide in GUIDES:
        assert python_blocks(guide).strip(), guide
