"""The shape of the package: imports go one way and never in a circle (import-linter's contracts in
pyproject.toml), diffusers' private internals are named in one module, no private name crosses a module
boundary, and no module grows past about 500 lines."""

import ast
import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "taocache"
COMPAT = PACKAGE / "core" / "compat.py"
MODULES = sorted(PACKAGE.rglob("*.py"))

#: diffusers' names that are not public API: their modules, and private attributes of its objects.
DIFFUSERS_PRIVATE = re.compile(
    r"diffusers\.hooks\.(_common|_helpers|hooks)\b"
    r"|\._(context|state_cache|get_child_registries|hook_order|diffusers_hook|cache_config|guidance_scale"
    r"|get_parameter_from_args_kwargs|hf_hook|old_forward)\b"
)


def test_import_contracts_hold():
    # in a process of its own: import-linter configures logging, which would silence the other tests' loggers
    check = "import sys; from importlinter.cli import lint_imports; sys.exit(lint_imports(no_cache=True, no_logo=True))"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    result = subprocess.run([sys.executable, "-c", check], cwd=ROOT, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_contracts_cover_every_part_of_the_package():
    text = (ROOT / "pyproject.toml").read_text()
    parts = {p.stem for p in PACKAGE.iterdir() if (p.suffix == ".py" or (p / "__init__.py").exists())}
    parts -= {"__init__", "testing", "__pycache__"}
    missing = [part for part in sorted(parts) if f'"taocache.{part}' not in text and f" taocache.{part}" not in text]
    assert not missing, f"add {missing} to the layers in pyproject.toml"


def test_diffusers_private_internals_are_named_in_the_compatibility_module_only():
    found = []
    for path in MODULES:
        if path == COMPAT:
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if DIFFUSERS_PRIVATE.search(line):
                found.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    assert not found, "use taocache.core.compat instead:\n" + "\n".join(found)
    assert DIFFUSERS_PRIVATE.search(COMPAT.read_text())  # the pattern still matches what compat names


def test_no_private_name_is_imported_from_another_module():
    found = []
    for path in MODULES:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.level or (node.module or "").startswith("taocache")):
                private = [a.name for a in node.names if a.name.startswith("_") and not a.name.startswith("__")]
                if private:
                    found.append(f"{path.relative_to(ROOT)}:{node.lineno} imports {private}")
    assert not found, "\n".join(found)


def test_no_module_is_over_about_500_lines():
    long = {str(p.relative_to(ROOT)): n for p in MODULES if (n := len(p.read_text().splitlines())) > 520}
    assert not long, f"split these modules along their concerns: {long}"
