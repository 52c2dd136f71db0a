"""Type-check the installed package layout with mypy.

The repo maps folders onto ``parley.*`` (``agent/`` is ``parley.agent``, see
``[tool.setuptools.package-dir]``), which mypy cannot follow from the checkout. So the
package is laid out as links in a temporary folder and checked there; errors name the
linked paths (``parley/agent/core/session.py`` is ``agent/core/session.py`` here).

    python .ci/typecheck.py        # the whole package, settings from pyproject.toml
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def lay_out(into: Path) -> None:
    dirs = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-dir"]
    top = into / "parley"
    top.mkdir()
    for f in (ROOT / dirs["parley"]).glob("*.py"):
        (top / f.name).symlink_to(f)
    for name, folder in sorted(dirs.items()):
        parts = name.split(".")[1:]
        # A subpackage inside one already linked (parley.agent.harness) comes with it.
        if not parts or len(parts) > 1:
            continue
        (top / parts[0]).symlink_to(ROOT / folder)


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        lay_out(Path(tmp))
        cmd = [sys.executable, "-m", "mypy", "--config-file", str(ROOT / "pyproject.toml")]
        cmd += ["-p", "parley", *sys.argv[1:]]
        env = {**os.environ, "MYPY_CACHE_DIR": str(ROOT / ".mypy_cache")}
        return subprocess.run(cmd, cwd=tmp, env=env).returncode


if __name__ == "__main__":
    sys.exit(main())
