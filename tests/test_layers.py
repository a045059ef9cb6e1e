"""Dependencies point one way: ebm_core <- ebm_eval <- ebm_jobs. Checked in the source (imports anywhere in a
file, lazy ones inside functions included) and at run time (importing every module of a lower package loads
nothing of a higher one, nor Ray or MLflow)."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGES = Path(__file__).resolve().parents[1] / "packages"
FORBIDDEN = {
    "ebm_core": {"ebm_eval", "ebm_jobs", "ray", "mlflow", "torch_fidelity"},
    "ebm_eval": {"ebm_jobs", "ray", "mlflow"},
}


def imported_roots(path: Path) -> set[str]:
    roots = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            roots.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            roots.add(node.module.split(".")[0])
    return roots


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_no_source_file_imports_upward(package):
    files = sorted((PACKAGES / package / "src" / package).rglob("*.py"))
    assert files
    bad = {str(f.relative_to(PACKAGES)): sorted(imported_roots(f) & FORBIDDEN[package]) for f in files}
    assert not {f: m for f, m in bad.items() if m}


def test_pyproject_dependencies_point_one_way():
    eval_deps = (PACKAGES / "ebm_eval" / "pyproject.toml").read_text()
    core_deps = (PACKAGES / "ebm_core" / "pyproject.toml").read_text()
    assert "ebm-jobs" not in eval_deps and "mlflow" not in eval_deps and "ray" not in eval_deps
    assert "ebm-eval" not in core_deps and "ebm-jobs" not in core_deps


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_importing_every_module_loads_nothing_higher(package):
    code = (f"import importlib, pkgutil, sys, {package}\n"
            f"for m in pkgutil.walk_packages({package}.__path__, '{package}.'):\n"
            f"    importlib.import_module(m.name)\n"
            f"print(' '.join(sorted({{m.split('.')[0] for m in sys.modules}} & set({sorted(FORBIDDEN[package])!r}))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=180)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == ""
