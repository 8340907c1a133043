"""The distribution installs as a wheel and every component imports as `modelkit.<component>`."""

import pathlib
import subprocess
import sys
import tomllib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
COMPONENTS = ("authoring", "exporter", "edge_runtime", "converters", "cli")


def declared_packages():
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]


def source_packages():
    found = []
    for component in COMPONENTS:
        for init in sorted((ROOT / component).rglob("__init__.py")):
            rel = init.parent.relative_to(ROOT).parts
            found.append(".".join(("modelkit",) + rel))
    return found


def test_every_package_folder_is_declared_in_pyproject():
    missing = sorted(set(source_packages()) - set(declared_packages()))
    assert not missing, f"add these to [tool.setuptools] packages in pyproject.toml: {missing}"


def dependency_dirs():
    """The folders this interpreter imports the runtime dependencies from."""
    import click, flatbuffers, numpy, onnx, safetensors

    return sorted({str(pathlib.Path(m.__file__).parents[1])
                   for m in (click, flatbuffers, numpy, onnx, safetensors)})


@pytest.mark.slow
def test_wheel_installs_into_a_fresh_venv_and_imports(tmp_path):
    wheel_dir = tmp_path / "wheels"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
         "-w", str(wheel_dir), str(ROOT)],
        check=True, cwd=tmp_path,
    )
    (wheel,) = wheel_dir.glob("modelkit-*.whl")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    venv_python = venv / "bin" / "python"
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(venv_python), "install", "-q",
         "--no-deps", str(wheel)],
        check=True,
    )
    # The wheel's dependencies come from this environment; a plain path in a .pth file does not
    # run that environment's editable-install hooks, so modelkit itself can only come from the wheel.
    venv_site = subprocess.run(
        [str(venv_python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True, capture_output=True, text=True,
    ).stdout.strip()
    pathlib.Path(venv_site, "deps.pth").write_text("\n".join(dependency_dirs()) + "\n")

    probe = "; ".join(
        [f"import {name}" for name in declared_packages()]
        + [f"assert {name}.__file__.startswith({venv_site!r}), {name}.__file__"
           for name in declared_packages()]
    )
    subprocess.run([str(venv_python), "-c", probe], check=True, cwd=tmp_path)
    version = subprocess.run(
        [str(venv / "bin" / "modelkit"), "--version"],
        check=True, capture_output=True, text=True, cwd=tmp_path,
    )
    assert "modelkit, version 0.1.0" in version.stdout
