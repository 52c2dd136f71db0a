"""The package layout traps of DESIGN.md section 1."""

import importlib.util
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _run(code: str, cwd: Path) -> str:
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True, check=True,
        timeout=300,
    )  # fmt: skip
    return out.stdout.strip()


def test_repo_root_does_not_shadow_hf_tokenizers():
    # From the repo root ('' on sys.path) our tokenizers/ folder must lose to HF's package.
    code = (
        "import transformers, tokenizers, parley.tokenizers.vocab as v;"
        "print(tokenizers.__file__); print(hasattr(tokenizers, 'Tokenizer')); print(v.__file__)"
    )
    hf_file, has_tokenizer, ours = _run(code, ROOT).splitlines()
    assert "site-packages" in hf_file and has_tokenizer == "True"
    assert Path(ours).resolve() == ROOT / "tokenizers" / "vocab.py"
    assert not (ROOT / "tokenizers" / "__init__.py").exists()


def test_no_bare_top_level_packages_installed(tmp_path):
    # Outside the repo, none of our folder names may import as a top-level package.
    code = (
        "import importlib.util as u\n"
        "for n in ('agent', 'llm', 'speech_io'):\n"
        "    s = u.find_spec(n); print(n, s.origin if s else None)\n"
        "import tokenizers; print('tokenizers', tokenizers.__file__)\n"
    )
    lines = dict(line.split(" ", 1) for line in _run(code, tmp_path).splitlines())
    for name in ("agent", "llm", "speech_io"):
        assert lines[name] == "None" or not lines[name].startswith(str(ROOT / name)), lines
    assert not lines["tokenizers"].startswith(str(ROOT / "tokenizers"))
    assert "site-packages" in lines["tokenizers"]


def test_namespace_resolves_to_repo_folders():
    for mod, folder in [
        ("parley.agent", "agent"),
        ("parley.speech_io", "speech_io"),
        ("parley.llm", "llm"),
        ("parley.tokenizers.vocab", "tokenizers"),
    ]:
        spec = importlib.util.find_spec(mod)
        assert spec is not None and spec.origin is not None
        assert Path(spec.origin).resolve().parent == ROOT / folder


def _agent_imports(folder: Path) -> set[str]:
    """The ``parley.agent`` subpackages or modules the files under ``folder`` import."""
    import ast

    found = set()
    for path in folder.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = (
                [node.module or ""]
                if isinstance(node, ast.ImportFrom)
                else [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else []
            )
            for name in names:
                parts = name.split(".")
                if parts[:2] == ["parley", "agent"] and len(parts) > 2:
                    found.add(parts[2])
                elif parts[:2] == ["parley", "agent"] and isinstance(node, ast.ImportFrom):
                    found.update(a.name for a in node.names)
    return found


def test_the_apps_stand_on_the_core_and_never_on_each_other():
    apps = {"chat", "service", "harness"}
    assert _agent_imports(ROOT / "agent" / "core") == {"core"}
    for app in apps:
        used = _agent_imports(ROOT / "agent" / app)
        assert "core" in used
        assert not used & (apps - {app}), (app, used)
        # Beyond the core, only the commands' shared start-up (model and config loading).
        assert used <= {app, "core", "runtime"}, (app, used)
