"""The Dockerfile's own steps, run outside a container engine (none runs on these machines).

Its RUN lines are read from the Dockerfile and run as written in clean virtual environments,
with three substitutions a container would make by itself: its paths (`/wheels`, `/etc/nabij`)
become temporary directories, the metrics port a free one, and `--no-cache-dir` is dropped (it
keeps an image layer small; here it would only download every wheel again). Creating the
system user is the container's business and is skipped. The image's dependency list is then
checked for demo and development packages, and its ENTRYPOINT + CMD is started against this
test's Mosquitto and Redis until its HEALTHCHECK passes.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tomllib
import venv
from pathlib import Path

import pytest

from tests.deploy.dockerfile import Instruction, Stage, command, env, healthcheck_command, parse
from tests.integration.conftest import StackFactory
from tests.integration.stack import wait_until
from tests.servers import free_port

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
IMAGE_PORT = "9100"
SKIPPED_RUN = ("useradd",)


def _environment(root: Path) -> Path:
    venv.EnvBuilder(with_pip=True, clear=True).create(root)
    return root / "bin"


def _run_steps(stage: Stage, cwd: Path, bin_dir: Path, paths: dict[str, Path]) -> None:
    for step in stage.all("RUN"):
        if step.argument.split()[0] in SKIPPED_RUN:
            continue
        script = step.argument.replace(" --no-cache-dir", "")
        for image_path, here in paths.items():
            script = script.replace(image_path, str(here))
        shell_env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
        done = subprocess.run(
            ["/bin/sh", "-c", script], cwd=cwd, env=shell_env,
            capture_output=True, text=True, timeout=600, check=False,
        )  # fmt: skip
        assert done.returncode == 0, f"RUN {step.argument}\n{done.stdout}\n{done.stderr}"


def _copy_sources(step: Instruction, context: Path) -> None:
    *sources, target = step.argument.split()
    for source in sources:
        origin, destination = REPO / source, context / target
        if origin.is_dir():
            shutil.copytree(origin, destination / source if target.endswith("/") else destination,
                            ignore=shutil.ignore_patterns("__pycache__"))  # fmt: skip
        else:
            destination.mkdir(parents=True, exist_ok=True)
            shutil.copy2(origin, destination / origin.name)


def _excluded_packages() -> set[str]:
    """The demo and development extras: none of them may reach the image."""
    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]
    names = {
        re.split(r"[<>=!~\[ ]", spec, maxsplit=1)[0] for spec in extras["demo"] + extras["dev"]
    }
    return {name.lower().replace("_", "-") for name in names} - {"nabij"}


def test_the_image_builds_from_wheels_and_its_healthcheck_passes(
    tmp_path: Path, make_stack: StackFactory
) -> None:
    build, image = parse((REPO / "Dockerfile").read_text())
    wheels = tmp_path / "wheels"
    paths = {"/wheels": wheels}

    context = tmp_path / "src"
    context.mkdir()
    for step in build.all("COPY"):
        _copy_sources(step, context)
    _run_steps(build, context, _environment(tmp_path / "build"), paths)
    assert [w.name for w in wheels.glob("nabij-*.whl")], "the build stage made no nabij wheel"

    bin_dir = _environment(tmp_path / "image")
    _run_steps(image, tmp_path, bin_dir, paths)
    listed = subprocess.run(
        [str(bin_dir / "python"), "-m", "pip", "list", "--format=json"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    installed = {p["name"].lower().replace("_", "-") for p in json.loads(listed.stdout)}
    assert "nabij" in installed
    assert installed & _excluded_packages() == set()

    stack = make_stack()
    port = str(free_port())
    image_env = env(image.last("ENV").argument)
    image_env["NABIJ_CONFIG"] = str(stack.config_dir)  # the mounted /etc/nabij
    entrypoint = command(image.last("ENTRYPOINT").argument)
    cmd = command(image.last("CMD").argument)
    probe = healthcheck_command(image.last("HEALTHCHECK").argument)
    assert IMAGE_PORT in cmd and IMAGE_PORT in probe
    run_env = {**os.environ, **image_env, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
    log = (tmp_path / "service.log").open("wb")
    service = subprocess.Popen(
        [*entrypoint, *(port if word == IMAGE_PORT else word for word in cmd)],
        env=run_env, stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path,
    )  # fmt: skip
    try:
        healthy = [port if word == IMAGE_PORT else word for word in probe]

        def passes() -> bool:
            return (
                subprocess.run(healthy, env=run_env, capture_output=True, check=False).returncode
                == 0
            )

        wait_until(
            passes,
            what="the image's HEALTHCHECK passes",
            timeout_s=90,
            detail=lambda: (tmp_path / "service.log").read_text(errors="replace"),
        )
    finally:
        service.terminate()
        assert service.wait(timeout=30) == 0
