"""deploy/compose.yaml and deploy/nginx.conf cannot be run here (no containers); check that they
agree with the code they deploy."""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import urlsplit

import yaml

from eraser_store.backends import is_url
from server.settings import DEFAULT_PORT, ENV_PREFIX, ServerSettings

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"


def replicas() -> dict[str, dict]:
    services = yaml.safe_load((DEPLOY / "compose.yaml").read_text())["services"]
    return {name: s for name, s in services.items() if name.startswith("replica")}


def test_replicas_share_one_postgresql_store_and_set_only_real_settings():
    found = replicas()
    assert len(found) >= 2
    for service in found.values():
        env = service["environment"]
        store = env["SFT_ERASER_STORE"]
        assert is_url(store) and urlsplit(store).password is None  # it comes from PGPASSWORD
        assert "PGPASSWORD" in env
        for name in env:
            if name.startswith(ENV_PREFIX):
                assert name[len(ENV_PREFIX) :].lower() in ServerSettings.model_fields, name
    assert len({s["environment"]["SFT_ERASER_STORE"] for s in found.values()}) == 1


def test_the_balancer_reaches_every_replica_within_the_servers_limits():
    nginx = (DEPLOY / "nginx.conf").read_text()
    upstream = re.findall(r"^\s*server ([\w-]+):(\d+)", nginx, re.MULTILINE)
    assert {host for host, _ in upstream} == set(replicas())
    assert {int(port) for _, port in upstream} == {DEFAULT_PORT}
    fields = ServerSettings.model_fields
    read_timeout = int(re.search(r"proxy_read_timeout (\d+)s", nginx).group(1))
    assert read_timeout > fields["request_timeout_s"].default
    body_mb = int(re.search(r"client_max_body_size (\d+)m", nginx).group(1))
    assert body_mb << 20 >= fields["max_upload_bytes"].default
    assert "proxy_buffering off" in nginx  # streams
