"""The key API without Redis (this process's keys) and without a secret (refused), on real
gateway processes."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import openai
import pytest

from tests.conftest import GATEWAY_LOGS, Connect, Upstreams, run_gateway
from tests.support.keys import ADMIN, POLICY, SECRET, accepted, admin, chat, create, until


def test_without_redis_keys_live_in_the_process_and_survive_a_reload(
    upstreams: Upstreams, tmp_path: Path, connect: Connect
) -> None:
    env = {"GATEWAY_ADMIN_KEY": ADMIN, "GATEWAY_KEY_SECRET": SECRET}
    with run_gateway(POLICY.format(oai=upstreams.openai_url), env, tmp=tmp_path) as url:
        made = create(url, team="apps")
        assert chat(connect(url, made["key"]))
        ready = httpx.get(url + "/readyz").json()
        policy = Path(ready["policy_file"])
        policy.write_text(policy.read_text().replace("  other:", "  third: {to: [open]}\n  other:"))
        until(
            lambda: httpx.get(url + "/readyz").json()["policy_version"] != ready["policy_version"],
            5,
        )
        assert "third" in [m.id for m in connect(url, made["key"]).models.list()]
        admin(url, "DELETE", f"/admin/keys/{made['id']}")
        assert not accepted(connect, url, made["key"])


def test_without_a_secret_the_key_api_is_refused_and_policy_keys_work(
    upstreams: Upstreams, tmp_path: Path, connect: Connect
) -> None:
    env = {"GATEWAY_ADMIN_KEY": ADMIN}
    with run_gateway(POLICY.format(oai=upstreams.openai_url), env, tmp=tmp_path) as url:
        refused = admin(url, "POST", "/admin/keys", {"team": "apps"})
        assert refused.status_code == 404
        error = refused.json()["error"]
        assert error["code"] == "key_api_disabled" and "GATEWAY_KEY_SECRET" in error["message"]
        assert admin(url, "GET", "/admin/keys", key="wrong").status_code == 401
        assert chat(connect(url, "sk-policy-search"))
        with pytest.raises(openai.AuthenticationError):
            chat(connect(url, "sk-gw-made-up"))
        time.sleep(0.3)  # the log writer flushes every 0.1 s
        assert "GATEWAY_KEY_SECRET is not set" in GATEWAY_LOGS[url].read_text()
