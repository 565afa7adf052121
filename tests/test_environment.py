"""The three dependency descriptions agree: pyproject ranges, the pip lock and environment.yml."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import yaml
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _lock_pins() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "requirements.lock").read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, version = line.split("==")
        pins[_canonical(name)] = version
    return pins


def _conda_pip_pins() -> dict[str, str]:
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip_section = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d)
    pins = {}
    for entry in pip_section:
        if entry.startswith("-e") or entry.startswith("-r"):
            continue
        name, version = entry.split("==")
        pins[_canonical(name)] = version
    return pins


def test_environment_yml_mirrors_lock_exactly():
    assert _conda_pip_pins() == _lock_pins()


def test_lock_pins_torch_to_the_cpu_wheel_version():
    assert _lock_pins()["torch"] == "2.13.0"


def test_lock_satisfies_pyproject_ranges():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    requirements = [Requirement(r) for r in project["dependencies"]]
    for extra in project["optional-dependencies"].values():
        requirements += [Requirement(r) for r in extra]
    pins = _lock_pins()
    for req in requirements:
        name = _canonical(req.name)
        assert name in pins, f"{req.name} is declared in pyproject.toml but missing from requirements.lock"
        assert req.specifier.contains(pins[name], prereleases=True), (
            f"requirements.lock pins {req.name}=={pins[name]}, outside pyproject's range {req.specifier}"
        )


def test_makefile_installs_pinned_torch_before_the_lock():
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^TORCH_SPEC\s*\?=\s*torch==2\.13\.0$", makefile, flags=re.M)
    assert makefile.index("$(TORCH_SPEC)") < makefile.index("-r requirements.lock")
