"""Fresh virtual environments for installing plugins the way their users do, quickly and offline.

A new venv (no pip of its own) gets a ``.pth`` file that puts the repository and this
environment's site-packages (pip, setuptools, pydantic, Retainer itself) after its own
site-packages, so ``pip install --no-deps --no-build-isolation`` needs no network and a
plugin installed there is found only through its own entry point.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


class Venv:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.python = path / "bin" / "python"

    @classmethod
    def create(cls, path: Path) -> Venv:
        subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(path)], check=True,
                       timeout=120)
        venv = cls(path)
        purelib = venv.run("-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"
                           ).stdout.strip()
        ours = sysconfig.get_paths()["purelib"]
        (Path(purelib) / "_retainer_dev.pth").write_text(
            f"{REPO}\nimport site; site.addsitedir({ours!r})\n")
        return venv

    def env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items()
               if k not in ("PYTHONPATH", "VIRTUAL_ENV", "RETAINER_CONFIG")
               and not k.startswith(("RETAINER_LOAD", "RETAINER_DISABLE", "PYTEST_"))}
        env.update(PIP_DISABLE_PIP_VERSION_CHECK="1", PIP_NO_INPUT="1", **extra)
        return env

    def run(self, *args: str, check: bool = True, cwd: Path | None = None,
            timeout: float = 180, **env: str) -> subprocess.CompletedProcess[str]:
        done = subprocess.run([str(self.python), *args], capture_output=True, text=True,
                              env=self.env(**env), cwd=cwd, timeout=timeout)
        if check and done.returncode != 0:
            raise AssertionError(f"{' '.join(args)} exited {done.returncode}\n"
                                 f"stdout:\n{done.stdout}\nstderr:\n{done.stderr}")
        return done

    def pip_install(self, project: Path, scratch: Path) -> None:
        """Install a copy of ``project`` (building in place would litter the source tree)."""
        copy = scratch / project.name
        shutil.copytree(project, copy, ignore=shutil.ignore_patterns(
            "__pycache__", "*.egg-info", "build", ".pytest_cache"))
        self.run("-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                 "--no-index", str(copy))

    def retainer(self, *args: str, check: bool = True, **env: str
                 ) -> subprocess.CompletedProcess[str]:
        return self.run("-m", "agent", *args, check=check, **env)
