"""The gateway's config: tokens from the file and the environment, and a bad
config stopping the process with exit status 2 and the field named."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from medbay.common.settings import ConfigError
from medbay.gateway.config import load_config

TOKEN = "t" * 24


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "gateway.yaml"
    path.write_text(text)
    return path


def test_tokens_from_the_file_its_env_vars_and_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("ALICE_TOKEN", "a" * 20)
    path = write(tmp_path, "tokens:\n  - {name: alice, token_env: ALICE_TOKEN, role: operator}\n")
    monkeypatch.setenv("MEDBAY_GATEWAY_TOKENS", f"wall:viewer:{TOKEN}, bot:operator:{'b' * 16}")
    config = load_config(path)
    assert [(t.name, t.role) for t in config.tokens] == [
        ("alice", "operator"),
        ("wall", "viewer"),
        ("bot", "operator"),
    ]
    assert config.tokens[0].secret == "a" * 20 and config.history_hours == 72
    monkeypatch.setenv("MEDBAY_GATEWAY_TOKENS", f"x:viewer:{TOKEN}")
    assert load_config(None).tokens[0].name == "x"


@pytest.mark.parametrize(
    ("text", "env", "named"),
    [
        ("", "", "allow_anonymous_viewer"),
        (f"tokens: [{{name: a, token: {TOKEN}, role: admin}}]", "", "tokens[0].role"),
        ("tokens: [{name: a, token: short, role: viewer}]", "", "tokens[0]"),
        ("tokens: [{name: a, token_env: NOT_SET_ANYWHERE, role: viewer}]", "", "NOT_SET_ANYWHERE"),
        ("allow_anonymous_viewer: true\nhistory_hours: -1", "", "history_hours"),
        ("allow_anonymous_viewer: true\nhealth: {ports: {nope: 1}}", "", "health"),
        ("allow_anonymous_viewer: true", "a:viewer", "entry 1"),
        ("allow_anonymous_viewer: true", f"a:boss:{TOKEN}", "entry 1: role"),
        (f"tokens: [{{name: a, token: {TOKEN}, role: viewer}}]", f"b:viewer:{TOKEN}", "same"),
        ("allow_anonymous_viewer: true\nallowed_hosts: [localhost:8470]", "", "without a port"),
        ("allow_anonymous_viewer: true\nallowed_hosts: [a.*.com]", "", "allowed_hosts[0]"),
        ("allow_anonymous_viewer: true\nallowed_hosts: []", "", "allowed_hosts"),
        ("allow_anonymous_viewer: true\nallowed_origins: [ops.example.com]", "", "scheme://"),
        ("allow_anonymous_viewer: true\nallowed_origins: [http://a/b]", "", "allowed_origins"),
        ("allow_anonymous_viewer: true\nmax_body_bytes: 10", "", "max_body_bytes"),
        ("allow_anonymous_viewer: true\njaeger_url: jaeger:16686", "", "jaeger_url"),
        ("allow_anonymous_viewer: true\njaeger_url: 'http://j/?a=1'", "", "without a query"),
        ("allow_anonymous_viewer: true\nmonitoring: {max_edges: 0}", "", "monitoring.max_edges"),
    ],
)
def test_a_bad_config_names_what_is_wrong(tmp_path, monkeypatch, text, env, named):
    monkeypatch.setenv("MEDBAY_GATEWAY_TOKENS", env)
    with pytest.raises(ConfigError, match=re.escape(named)) as err:
        load_config(write(tmp_path, text))
    assert TOKEN not in str(err.value)


def test_the_process_exits_2_on_a_bad_config(tmp_path):
    path = write(tmp_path, "allow_anonymous_viewer: true\nmax_incidents: lots\n")
    done = subprocess.run(
        [sys.executable, "-m", "medbay.gateway.main", "--config", str(path)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 2
    assert "bad config" in done.stderr and "max_incidents" in done.stderr


def test_hosts_and_origins_are_written_as_requests_carry_them(tmp_path, monkeypatch):
    monkeypatch.setenv("MEDBAY_GATEWAY_TOKENS", f"x:viewer:{TOKEN}")
    assert load_config(None).allowed_hosts == ["localhost", "127.0.0.1", "[::1]"]
    config = load_config(
        write(
            tmp_path,
            "allowed_hosts: [Medbay.Example.COM, '::1', '*.ops.example.com', '*']\n"
            "allowed_origins: ['HTTPS://Ops.Example.com/', 'http://[::1]:8470']\n",
        )
    )
    assert config.allowed_hosts == ["medbay.example.com", "[::1]", "*.ops.example.com", "*"]
    assert config.allowed_origins == ["https://ops.example.com", "http://[::1]:8470"]
    assert config.max_body_bytes == 65536
