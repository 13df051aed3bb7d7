"""The architecture rule: fibtui → {sessions, remote}, remote → sessions; only fibtui imports textual."""

import json
import subprocess
import sys

import pytest

FORBIDDEN = {
    "sessions": ("fibtui", "remote", "textual"),
    "remote": ("fibtui", "textual"),
}


def loaded_after_import(pkg: str) -> set[str]:
    code = (f"import importlib, pkgutil, sys, json\nimport {pkg}\n"
            f"for m in pkgutil.walk_packages({pkg}.__path__, '{pkg}.'):\n    importlib.import_module(m.name)\n"
            "print(json.dumps(sorted(sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    return {m.split(".")[0] for m in json.loads(out)}


@pytest.mark.parametrize("pkg", sorted(FORBIDDEN))
def test_layer_does_not_import_upper_layers(pkg):
    loaded = loaded_after_import(pkg)
    bad = [m for m in FORBIDDEN[pkg] if m in loaded]
    assert not bad, f"importing every module of {pkg} loaded {bad}"


def test_fibtui_cli_imports_without_textual():
    """The CLI stays light: textual loads only when the TUI opens."""
    out = subprocess.run([sys.executable, "-c", "import sys, fibtui.cli; print('textual' in sys.modules)"],
                         capture_output=True, text=True, check=True).stdout.strip()
    assert out == "False"
