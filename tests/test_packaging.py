"""Packaged for deployment: the wheel, and the files in deploy/ (docs/DEPLOYMENT.md).

What this machine allows is proven by running it: the wheel built from a copy of the sources installs
in a fresh virtualenv, whose `vodgate` (run outside the checkout) serves a library that ffmpeg plays,
and checks deploy/'s configs. There is no Docker daemon here, so the Dockerfile, compose file and
systemd unit are checked for what they promise against the code they run: the packages the image
copies are the ones the wheel needs, the configs they mount pass `vodgate config check`, the user is
not root, the health check asks /healthz.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tomllib
import time
import venv
from pathlib import Path

import httpx
import pytest
import yaml

import media_fixtures as mf
import oracle
from conftest import REPO, free_port

DEPLOY = REPO / "deploy"


def wheel_packages() -> set[str]:
    packages = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    return {p.split(".")[0] for p in packages}


def dockerfile_copies() -> dict[str, str]:
    """COPY source -> destination of the Dockerfile's build stage and final stage."""
    pairs = re.findall(r"^COPY (?!--)(\S+)(?: \S+)* (\S+)$", (DEPLOY / "Dockerfile").read_text(), re.M)
    return dict(pairs)


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """A fresh virtualenv with the wheel built from a copy of the sources (no build/ of the checkout)."""
    root = tmp_path_factory.mktemp("wheel")
    src = root / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, src / name)
    for package in wheel_packages():
        shutil.copytree(REPO / package, src / package, ignore=shutil.ignore_patterns("__pycache__"))
    wheels = root / "wheels"
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(wheels), str(src)],
                           capture_output=True, text=True, timeout=300)
    assert build.returncode == 0, build.stderr[-2000:]
    (wheel,) = wheels.glob("vodgate-*.whl")
    env_dir = root / "venv"
    venv.create(env_dir, with_pip=True)
    install = subprocess.run([str(env_dir / "bin" / "pip"), "install", "-q", str(wheel)], capture_output=True, text=True,
                             timeout=600)
    assert install.returncode == 0, install.stderr[-2000:]
    return env_dir


def _outside_checkout_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    return env


def test_the_installed_wheel_serves_a_library_that_ffmpeg_plays(installed, media_library, tmp_path) -> None:
    port = free_port()
    log = open(tmp_path / "serve.log", "wb")
    proc = subprocess.Popen([str(installed / "bin" / "vodgate"), "serve", "--media", str(media_library), "--host",
                             "127.0.0.1", "--port", str(port)], cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT,
                            env=_outside_checkout_env())
    try:
        base = f"http://127.0.0.1:{port}"
        for _ in range(300):
            try:
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert proc.poll() is None, (tmp_path / "serve.log").read_text()
            time.sleep(0.1)
        frames = oracle.framemd5(f"{base}/p/demo/e/h264_baseline/hls/master.m3u8", "v:0")
        assert [f.md5 for f in frames] == [f.md5 for f in oracle.framemd5(mf.fixture_path("h264_baseline"), "v:0")]
        # the code that served it is the installed one, not the checkout's
        where = subprocess.run([str(installed / "bin" / "python"), "-c", "import packager; print(packager.__file__)"],
                               cwd=tmp_path, capture_output=True, text=True, env=_outside_checkout_env())
        assert where.stdout.startswith(str(installed)), where.stdout
    finally:
        proc.terminate()
        proc.wait(10)
        log.close()


def test_deploy_configs_pass_the_installed_config_check(installed, media_library, tmp_path) -> None:
    vodgate = str(installed / "bin" / "vodgate")
    origin = tmp_path / "origin.toml"  # the image mounts media at /media; here the fixture library stands in
    origin.write_text((DEPLOY / "origin.toml").read_text().replace('"/media"', f'"{media_library}"'))
    for config, role in ((origin, "role all"), (DEPLOY / "edge.toml", "role edge")):
        check = subprocess.run([vodgate, "config", "check", str(config)], capture_output=True, text=True, cwd=tmp_path,
                               env=_outside_checkout_env())
        assert check.returncode == 0, check.stderr
        assert role in check.stdout and "on 0.0.0.0:8080" in check.stdout


def test_the_image_copies_every_package_the_wheel_needs_and_runs_unprivileged() -> None:
    copies = dockerfile_copies()
    assert {src for src in copies if (REPO / src).is_dir()} == wheel_packages()
    text = (DEPLOY / "Dockerfile").read_text()
    user = re.findall(r"^USER (\S+)$", text, re.M)
    assert user == ["vodgate"] and "useradd --system" in text
    assert re.search(r"^HEALTHCHECK .*\n.*127\.0\.0\.1:8080/healthz", text, re.M)
    config = copies["deploy/origin.toml"]
    assert f'"--config", "{config}"' in re.search(r"^CMD (.*)$", text, re.M).group(1)
    assert tomllib.loads((DEPLOY / "origin.toml").read_text())["server"]["port"] == 8080  # EXPOSE 8080
    assert re.search(r"^EXPOSE 8080$", text, re.M)


def test_compose_runs_an_origin_two_edges_and_redis_with_configs_that_name_each_other() -> None:
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    services = compose["services"]
    assert set(services) == {"redis", "origin", "edge1", "edge2"}
    edge = tomllib.loads((DEPLOY / "edge.toml").read_text())
    origin = tomllib.loads((DEPLOY / "origin.toml").read_text())
    assert edge["edge"]["upstreams"] == [f"http://origin:{origin['server']['port']}"]
    assert edge["redis"]["url"] == origin["redis"]["url"] == "redis://redis:6379/0"
    from edge.workers import STOP_TIMEOUT

    for name in ("origin", "edge1", "edge2"):  # docker stop's 10 s would cut a worker's graceful stop short
        assert int(services[name]["stop_grace_period"].rstrip("s")) > STOP_TIMEOUT
    host_ports = [p.split(":")[0] for s in services.values() for p in s.get("ports", [])]
    assert len(host_ports) == len(set(host_ports)) == 3
    for name in ("origin", "edge1", "edge2"):
        mounts = dict(v.rsplit(":", 2)[:2] if v.count(":") > 1 else v.split(":") for v in services[name]["volumes"])
        config = next(src for src, dst in mounts.items() if dst == "/etc/vodgate/vodgate.toml")
        assert (DEPLOY / config).is_file()


def test_the_systemd_unit_checks_its_config_before_it_starts_and_runs_unprivileged() -> None:
    lines = re.findall(r"^(\w+)=(.*)$", (DEPLOY / "vodgate.service").read_text(), re.M)
    unit = dict(lines)
    config = unit["ExecStart"].split("--config ")[1]
    assert unit["ExecStart"] == f"/opt/vodgate/bin/vodgate serve --config {config}"
    assert unit["ExecStartPre"] == f"/opt/vodgate/bin/vodgate config check {config}"
    # systemctl reload: checked first, then SIGHUP (tests/test_reload.py)
    assert [v for k, v in lines if k == "ExecReload"] == [f"/opt/vodgate/bin/vodgate config check {config}",
                                                          "/bin/kill -HUP $MAINPID"]
    assert unit["User"] == "vodgate" and unit["NoNewPrivileges"] == "true" and unit["ProtectSystem"] == "strict"
    # the stop's SIGTERM to the supervisor only; time for its 30 s wait on a busy worker (edge/workers.py)
    from edge.workers import STOP_TIMEOUT

    assert unit["KillMode"] == "mixed" and int(unit["TimeoutStopSec"]) > STOP_TIMEOUT
