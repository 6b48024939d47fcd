"""Redaction of command lines: what is hidden, and what is left as it was."""

from __future__ import annotations

import shlex

import pytest

from medbay.common.redact import redact_argv, redact_text, secret_name
from medbay.executor.targets.base import shown


@pytest.mark.parametrize(
    ("command_line", "redacted"),
    [
        ("app --password=s3cret", "app --password=***"),
        ("app --password s3cret", "app --password ***"),
        ("app --db-password 'two words'", "app --db-password ***"),
        ("app '--password=a=b;c d'", "app --password=***"),
        ("app -password x", "app -password ***"),
        ("app --passwd x --pwd=y --pass z", "app --passwd *** --pwd=*** --pass ***"),
        ("app --token t --auth-token=t", "app --token *** --auth-token=***"),
        ("app --secret s --client-secret=s", "app --secret *** --client-secret=***"),
        ("app --apikey=k --api_key k", "app --apikey=*** --api_key ***"),
        ("app --api-key=k --apiKey k", "app --api-key=*** --apiKey ***"),
        ("app --auth user:pw --basic-auth=user:pw", "app --auth *** --basic-auth=***"),
        ("env PGPASSWORD=x MEDBAY_TOKEN=t app", "env PGPASSWORD=*** MEDBAY_TOKEN=*** app"),
        ("app token=abc secret=def pwd=ghi", "app token=*** secret=*** pwd=***"),
        ("app --env=DB_PASSWORD=x -e API_KEY=y", "app --env=DB_PASSWORD=*** -e API_KEY=***"),
        ("psql postgresql://app:s3cret@db:5432/app", "psql postgresql://app:***@db:5432/app"),
        ("redis-cli -u redis://:s3cret@cache:6379/0", "redis-cli -u redis://:***@cache:6379/0"),
        ("app --url=https://u:p%40ss@h/x", "app --url=https://u:***@h/x"),
        ("curl 'https://h/hook?a=1&token=abc&b=2'", "curl 'https://h/hook?a=1&token=***&b=2'"),
        ("curl -H 'Authorization: Bearer a.b'", "curl -H 'Authorization: Bearer ***'"),
        ("curl -H 'authorization: basic Zm9v'", "curl -H 'authorization: basic ***'"),
        ("curl -H 'X-Api-Key: k1'", "curl -H 'X-Api-Key: ***'"),
        ("curl -H 'X-Auth-Token: t1'", "curl -H 'X-Auth-Token: ***'"),
        ("app --dsn 'host=db password=pw dbname=x'", "app --dsn 'host=db password=*** dbname=x'"),
        ("""app '{"user": "u", "password": "pw"}'""", """app '{"user": "u", "password": "***"}'"""),
        ("app --opt=token=abc", "app --opt=token=***"),
        ("docker login --password-stdin --user u", "docker login --password-stdin --user u"),
        # left alone: nothing here names a secret
        ("sleep 600", "sleep 600"),
        ("redis-cli -p 6379 -h cache", "redis-cli -p 6379 -h cache"),
        ("git log --author Bob --author=Ann", "git log --author Bob --author=Ann"),
        ("app --user bob --port=80 --passive", "app --user bob --port=80 --passive"),
        ("curl 'https://h:8080/a?b=1' http://user@h/", "curl 'https://h:8080/a?b=1' http://user@h/"),
        ("python -m http.server 8080", "python -m http.server 8080"),
        ("app --password", "app --password"),
    ],
)  # fmt: skip
def test_redact_argv(command_line: str, redacted: str) -> None:
    assert redact_argv(shlex.split(command_line)) == shlex.split(redacted)


@pytest.mark.parametrize(
    ("text", "redacted"),
    [
        ("Bearer abc", "Bearer ***"),
        ("amqp://guest:guest@mq:5672/ and token=t", "amqp://guest:***@mq:5672/ and token=***"),
        ("user=app;password=x;host=db", "user=app;password=***;host=db"),
        ("the author: Bob", "the author: Bob"),
    ],
)
def test_redact_text(text: str, redacted: str) -> None:
    assert redact_text(text) == redacted


@pytest.mark.parametrize(
    ("name", "secret"),
    [
        ("--password", True),
        ("DB_PASS", True),
        ("x-auth", True),
        ("clientSecret", True),
        ("--author", False),
        ("--passive", False),
        ("--user", False),
    ],
)
def test_secret_name(name: str, secret: bool) -> None:
    assert secret_name(name) is secret


def test_shown_redacts() -> None:
    assert shown(["mysql", "--password=s3 cret", "db"]) == "mysql --password=*** db"
