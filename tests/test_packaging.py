"""What a wheel carries and where taocache reads and writes: every package and data folder is declared in
pyproject.toml, data is read through taocache.core.data, default outputs never go into the package, and the
declared Python floor matches the code. (.ci/wheel-check builds and runs the wheel itself.)"""

import tomllib
from pathlib import Path

from packaging.specifiers import SpecifierSet

from taocache.core.data import PACKAGED, data_path, data_root, user_cache_dir

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
SETUPTOOLS = PYPROJECT["tool"]["setuptools"]


def test_every_package_of_the_source_tree_is_in_the_wheel():
    found = {
        ".".join(path.relative_to(ROOT).parts)
        for path in (ROOT / "taocache").rglob("*")
        if path.is_dir() and "__pycache__" not in path.parts and (any(path.glob("*.py")) or any(path.glob("*.json")))
    }
    declared = set(SETUPTOOLS["packages"])
    assert found <= declared, f"add {sorted(found - declared)} to [tool.setuptools] packages"


def test_the_data_folders_the_library_reads_are_package_data():
    mapped = {folder: package for package, folder in SETUPTOOLS["package-dir"].items()}
    for folder in PACKAGED:
        assert mapped.get(folder) == "taocache.data." + folder.replace("/", "."), folder
        assert (ROOT / folder).is_dir()
    for package, folder in SETUPTOOLS["package-dir"].items():
        assert SETUPTOOLS["package-data"][package], f"{package} ({folder}) carries no files"


def test_a_source_checkout_reads_its_own_folders():
    assert data_root() == ROOT
    assert data_path("pipelines", "tiny-t2v.toml").is_file()


def test_the_embedded_models_resolve_from_the_data_root():
    from taocache.recipes import find_recipe

    for name in ("tiny-t2v", "tiny-t2i"):
        location = Path(find_recipe(name).model_location())
        assert location.is_dir() and location.is_relative_to(data_root()), location


def test_default_outputs_go_to_the_current_folder_or_the_user_cache(monkeypatch, tmp_path):
    from taocache.cli import build_parser
    from taocache.cli.bench import RUNS_DIR
    from taocache.taocache.calibration import default_directory
    from taocache.teacache.coefficients import coefficient_directories

    parser = build_parser()
    for command in (["run"], ["tune", "--target-psnr", "30"]):
        output = parser.parse_args(command).output
        assert not output.is_absolute(), f"{command[0]} writes to {output} by default"
    assert not RUNS_DIR.is_absolute()
    monkeypatch.setenv("TAOCACHE_CACHE_DIR", str(tmp_path))
    monkeypatch.delenv("TAOCACHE_CALIBRATION_DIR", raising=False)
    assert default_directory() == user_cache_dir("calibration") == tmp_path / "calibration"
    assert coefficient_directories()[0] == tmp_path / "teacache"  # where fit-teacache writes by default


def test_the_declared_python_floor_matches_the_code():
    uses_tomllib = any("import tomllib" in p.read_text() for p in (ROOT / "taocache").rglob("*.py"))
    floor = SpecifierSet(PYPROJECT["project"]["requires-python"])
    if uses_tomllib:
        assert "3.10" not in floor and "3.11" in floor
