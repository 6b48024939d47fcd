"""The approver's config: YAML, secrets from the environment, and errors naming the field."""

from __future__ import annotations

from pathlib import Path

import pytest

from medbay.approver.config import ConfigError, load_config
from medbay.approver.main import main

TOKEN = "123456:TEST-token_x"
SECRET = "0123456789abcdef"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "approver.yaml"
    path.write_text(text)
    return path


def test_no_file_means_telegram_off_and_fifteen_minutes():
    config = load_config(None, {})
    assert not config.telegram_on
    assert config.expiry_minutes == 15
    assert config.api_base == "https://api.telegram.org"


def test_secrets_from_the_environment_win_and_are_never_shown(tmp_path):
    path = write(
        tmp_path,
        "token: '1:from-file'\nsecret: from-the-file-0123\nchat_ids: [-100]\n"
        "allowed_user_ids: [7]\napi_base: http://127.0.0.1:9/\nexpiry_minutes: 0.05\n",
    )
    config = load_config(path, {"MEDBAY_TELEGRAM_TOKEN": TOKEN, "MEDBAY_APPROVER_SECRET": SECRET})
    assert config.token is not None and config.token.get_secret_value() == TOKEN
    assert config.secret is not None and config.secret.get_secret_value() == SECRET
    assert config.api_base == "http://127.0.0.1:9"
    assert config.expiry.total_seconds() == 3
    assert TOKEN not in repr(config) and SECRET not in str(config)


@pytest.mark.parametrize(
    ("text", "env", "field"),
    [
        ("chat_ids: [1]\nallowed_user_ids: [2]\n", {"MEDBAY_TELEGRAM_TOKEN": TOKEN}, "secret:"),
        (f"token: '{TOKEN}'\nsecret: short\n", {}, "secret: must be at least"),
        (
            f"token: '{TOKEN}'\nallowed_user_ids: [2]\n",
            {"MEDBAY_APPROVER_SECRET": SECRET},
            "chat_ids:",
        ),
        (
            f"token: '{TOKEN}'\nchat_ids: [1]\n",
            {"MEDBAY_APPROVER_SECRET": SECRET},
            "allowed_user_ids:",
        ),
        ("token: 'not a token'\n", {"MEDBAY_APPROVER_SECRET": SECRET}, "token:"),
        ("expiry_minutes: 0\n", {}, "expiry_minutes:"),
        ("api_base: ftp://example\n", {}, "api_base:"),
        ("chat_id: [1]\n", {}, "chat_id:"),
    ],
)
def test_bad_config_names_the_field(tmp_path, text, env, field):
    with pytest.raises(ConfigError) as caught:
        load_config(write(tmp_path, text), env)
    assert field in str(caught.value)


def test_bad_config_exits_with_status_2(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("MEDBAY_APPROVER_SECRET", raising=False)
    monkeypatch.setenv("MEDBAY_TELEGRAM_TOKEN", TOKEN)
    with pytest.raises(SystemExit) as caught:
        main(["--config", str(write(tmp_path, "chat_ids: [1]\nallowed_user_ids: [2]\n"))])
    assert caught.value.code == 2
    err = capsys.readouterr().err
    assert "secret: required when a Telegram token is set" in err and TOKEN not in err
