"""audiolm_pl installs like a library: an sdist and the wheel built from it carry the shipped YAMLs (`conf/`) and the
LICENSE, and the wheel installed into a fresh virtual environment, with no checkout on its path, finds its configs
and trains the tiny codec from a directory outside the repository.

Offline: the builds call setuptools' PEP 517 hooks directly (what `python -m build` does, minus the isolated
environment it would download into), `pip install --no-index --no-deps` installs the wheel, and the new environment
borrows this one's dependencies through a `.pth` line. That line adds this environment's site-packages as a plain
path, so the `.pth` files inside it (the editable install's import hook among them) are not run: the only
`audiolm_pl` the new environment can import is the installed wheel's.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tarfile
import zipfile
from pathlib import Path
from types import SimpleNamespace

import pytest

REPO = Path(__file__).resolve().parents[1]
SOURCES = ("audiolm_pl", "conf", "setup.py", "setup.cfg", "pyproject.toml", "README.md", "LICENSE")


def build_hook(hook: str, source: Path, out: Path) -> Path:
    """Run setuptools' `build_sdist` / `build_wheel` hook in `source` (a subprocess: the hooks work in the current
    directory); returns the file it wrote in `out`."""
    code = f"from setuptools import build_meta; print(build_meta.{hook}({str(out)!r}))"
    done = subprocess.run([sys.executable, "-c", code], cwd=source, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"{hook} failed in {source}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return out / done.stdout.strip().splitlines()[-1]


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> SimpleNamespace:
    """sdist of a copy of the working tree (no build leftovers land in the repository), then a wheel from the
    unpacked sdist, as an installer from an index would build it."""
    root = tmp_path_factory.mktemp("build")
    tree = root / "tree"
    for name in SOURCES:
        source = REPO / name
        if source.is_dir():
            shutil.copytree(source, tree / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(source, tree / name)
    sdist = build_hook("build_sdist", tree, root / "dist")
    with tarfile.open(sdist) as archive:
        archive.extractall(root / "unpacked", filter="data")
    wheel = build_hook("build_wheel", root / "unpacked" / sdist.name.removesuffix(".tar.gz"), root / "dist")
    return SimpleNamespace(sdist=sdist, wheel=wheel)


def shipped_yamls() -> set[str]:
    """The repository's config files, relative to conf/: `codec/tiny.yaml`, `lm/coarse/small.yaml`, ..."""
    return {path.relative_to(REPO / "conf").as_posix() for path in (REPO / "conf").rglob("*.yaml")}


def test_sdist_and_wheel_ship_every_config_and_the_license(built):
    with tarfile.open(built.sdist) as archive:
        sdist_names = {name.split("/", 1)[1] for name in archive.getnames() if "/" in name}
    with zipfile.ZipFile(built.wheel) as archive:
        wheel_names = set(archive.namelist())
        metadata = archive.read(next(n for n in wheel_names if n.endswith(".dist-info/METADATA"))).decode()
        wheel_license = archive.read(next(n for n in wheel_names if n.endswith(".dist-info/licenses/LICENSE")))
    assert {f"conf/{name}" for name in shipped_yamls()} <= sdist_names
    assert "LICENSE" in sdist_names
    wheel_yamls = {name.removeprefix("audiolm_pl/conf/") for name in wheel_names if name.startswith("audiolm_pl/conf/")}
    assert wheel_yamls == shipped_yamls()
    assert not any(name.startswith("conf/") for name in wheel_names), "conf/ must ship inside the package"
    assert wheel_license == (REPO / "LICENSE").read_bytes()
    assert "MIT License" in wheel_license.decode()
    assert "License: MIT" in metadata.splitlines() and "License-File: LICENSE" in metadata.splitlines()


@pytest.fixture(scope="module")
def installed(built, tmp_path_factory) -> SimpleNamespace:
    """A fresh venv with the wheel installed (no index, no dependencies) and this environment's site-packages
    appended to its path for the dependencies; `python` and `cli` are its interpreter and `audiolm-pl`."""
    venv = tmp_path_factory.mktemp("venv")
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    # this environment's pip, run by the new interpreter: the wheel lands in the new venv, and before the
    # .pth below exists, so pip sees no other audiolm_pl there to replace
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--quiet", "--no-index",
                    "--no-deps", str(built.wheel)], check=True, timeout=300)
    new_site = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                   check=True, capture_output=True, text=True).stdout.strip())
    (new_site / "borrowed_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    return SimpleNamespace(venv=venv, python=python, cli=venv / "bin" / "audiolm-pl", env=env,
                           workdir=tmp_path_factory.mktemp("elsewhere"))


WHERE_FROM = """
import json, sys
import audiolm_pl
from audiolm_pl.config import CONF_DIR, resolve_config_path
print(json.dumps({"package": audiolm_pl.__file__, "conf": str(CONF_DIR),
                  "tiny": str(resolve_config_path("codec", "tiny")), "path": sys.path}))
"""


def test_installed_wheel_reads_its_own_configs(installed):
    done = subprocess.run([str(installed.python), "-c", WHERE_FROM], cwd=installed.workdir, env=installed.env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    where = json.loads(done.stdout.strip().splitlines()[-1])
    package_dir = Path(where["package"]).parent
    assert package_dir.is_relative_to(installed.venv), f"imported {where['package']}, not the installed wheel"
    assert Path(where["conf"]) == package_dir / "conf"
    assert Path(where["tiny"]) == package_dir / "conf" / "codec" / "tiny.yaml"
    assert str(REPO) not in where["path"]


@pytest.mark.slow
def test_installed_cli_trains_the_tiny_codec_outside_the_repository(installed, audio_shards):
    command = [str(installed.cli), "train", "codec", "--config", "tiny", "trainer.max_steps=2",
               f"data.train_shards={audio_shards.train}", f"data.val_shards={audio_shards.val}", "data.batch_size=2",
               "data.val_samples=2", "trainer.val_check_interval=2", "trainer.limit_val_batches=1",
               "trainer.enable_progress_bar=false"]
    done = subprocess.run(command, cwd=installed.workdir, env=installed.env, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, f"{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    assert installed.cli.read_text().startswith(f"#!{installed.python}")  # the venv's interpreter runs the CLI
    checkpoint = installed.workdir / "runs" / "codec" / "checkpoints" / "last.ckpt"
    assert checkpoint.is_file(), done.stdout[-3000:]
    assert f"checkpoint {checkpoint.relative_to(installed.workdir)}" in done.stdout
