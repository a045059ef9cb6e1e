"""scripts/install.sh fails loudly, run against throw-away copies of the repository (never the real .venv)."""

import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def copy_repo(dst: Path) -> Path:
    """What install.sh reads: itself, the three packages and the test requirements."""
    (dst / "scripts").mkdir(parents=True)
    shutil.copy(ROOT / "scripts" / "install.sh", dst / "scripts")
    shutil.copy(ROOT / "requirements-test.txt", dst)
    shutil.copytree(ROOT / "packages", dst / "packages", ignore=shutil.ignore_patterns("*.egg-info", "__pycache__"))
    return dst


def test_a_failing_requirement_fails_the_install(tmp_path):
    repo = copy_repo(tmp_path / "repo")
    with open(repo / "requirements-test.txt", "a") as f:
        f.write("\n./no-such-requirement-dir\n")
    # A throw-away venv that sees this environment's packages (through a .pth file), so everything
    # imports afterwards: only pip's own exit status can tell that the install failed.
    subprocess.run([sys.executable, "-m", "venv", str(repo / ".venv")], check=True, timeout=120)
    site = next((repo / ".venv" / "lib").glob("python3*/site-packages"))
    (site / "zz_real_env.pth").write_text(f"import site; site.addsitedir({sysconfig.get_paths()['purelib']!r})\n")
    out = subprocess.run(["bash", str(repo / "scripts" / "install.sh"), "test"], capture_output=True, text=True,
                         timeout=300)
    assert out.returncode != 0, out.stdout + out.stderr
    assert "no-such-requirement-dir" in out.stdout + out.stderr


def test_a_missing_python_311_is_one_clear_line(tmp_path):
    repo = copy_repo(tmp_path / "repo")
    out = subprocess.run(["bash", str(repo / "scripts" / "install.sh")], capture_output=True, text=True, timeout=60,
                         env={"PATH": "/usr/bin:/bin", "PYTHON": str(tmp_path / "no" / "python3.11")})
    assert out.returncode == 1
    assert out.stderr.count("\n") == 1 and "needs Python 3.11" in out.stderr and "PYTHON=" in out.stderr
    assert not (repo / ".venv").exists()
