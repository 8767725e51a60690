"""`voicebot users ...` as an operator runs it (real processes) against a temporary data directory,
and the logins it makes working against the API over the same SQLite file."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import pytest

from voicebot.metrics import CallMetrics
from voicebot.storage import SQLITE_FILE, SqliteCallStore
from voicebot.web.api import make_app
from voicebot.web.auth import secret_hash

PASSWORD = "correct horse battery"


def voicebot(data_dir: Path, *args: str, stdin: str = "") -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("VOICEBOT_")}
    return subprocess.run([sys.executable, "-m", "voicebot", "users", *args], input=stdin, capture_output=True,
                          text=True, env={**env, "VOICEBOT_DATA_DIR": str(data_dir)}, timeout=120)


async def run(data_dir: Path, *args: str, stdin: str = "") -> subprocess.CompletedProcess:
    """``voicebot`` from a test on the event loop (which must not wait for a process itself)."""
    return await asyncio.to_thread(voicebot, data_dir, *args, stdin=stdin)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    """A supervisor and an agent made through the command line, once for the module (hashing is slow)."""
    data = tmp_path_factory.mktemp("data")
    made = voicebot(data, "add", "sam", "--role", "supervisor", "--password-stdin", stdin=PASSWORD + "\n")
    assert made.returncode == 0 and made.stdout == "added supervisor sam\n", made.stderr
    made = voicebot(data, "add", "ben", "--role", "agent", "--queues", "benefits, general", "--sip-uri",
                    "sip:ben@pbx.example.org", "--password-stdin", stdin=PASSWORD + "\n")
    assert made.returncode == 0, made.stderr
    assert made.stdout == "added agent ben serving benefits, general at sip:ben@pbx.example.org\n"
    return data


async def test_users_add_stores_argon2_hashes_and_an_agents_queues(data_dir):
    async with SqliteCallStore(data_dir / SQLITE_FILE, recover=False) as store:
        sam, ben = await store.get_user("sam"), await store.get_user("ben")
        agent = await store.get_agent("ben")
    assert (sam.role, ben.role) == ("supervisor", "agent")
    for user in (sam, ben):
        assert user.password_hash.startswith("$argon2id$v=19$m=65536,t=3,p=4$")
        assert PASSWORD not in user.password_hash
    assert (agent.sip_uri, agent.queues, agent.state) == ("sip:ben@pbx.example.org", ("benefits", "general"), "away")


def test_users_list_shows_roles_and_queues_but_no_secrets(data_dir):
    listed = voicebot(data_dir, "list")
    assert listed.returncode == 0
    assert listed.stdout.splitlines() == [
        "ben  agent  enabled  tokens 0  queues benefits,general  sip:ben@pbx.example.org",
        "sam  supervisor  enabled  tokens 0",
    ]


async def test_a_token_from_users_token_opens_the_api_until_revoked(aiohttp_client, data_dir):
    made = await run(data_dir, "token", "sam", "--label", "reports")
    assert made.returncode == 0
    token = made.stdout.strip()
    assert made.stdout == token + "\n" and token.startswith("vbt_") and "shown only now" in made.stderr
    tokens = (await run(data_dir, "tokens", "sam")).stdout.split()
    token_id = tokens[0]
    assert secret_hash(token).startswith(token_id) and tokens[-1] == "reports"

    async with SqliteCallStore(data_dir / SQLITE_FILE, recover=False) as store:
        assert (await store.list_api_tokens("sam"))[0].token_hash == secret_hash(token)  # the hash, never the token
        client = await aiohttp_client(make_app(store, CallMetrics()))
        resp = await client.get("/api/me", headers={"Authorization": f"Bearer {token}"})
        assert resp.status == 200 and (await resp.json())["name"] == "sam"
        assert (await run(data_dir, "revoke", "sam", token_id)).returncode == 0
        assert (await client.get("/api/me", headers={"Authorization": f"Bearer {token}"})).status == 401
        await client.close()


async def test_users_disable_ends_a_users_tokens(aiohttp_client, tmp_path):
    made = await run(tmp_path, "add", "gail", "--role", "agent", "--password-stdin", stdin=PASSWORD + "\n")
    assert made.returncode == 0, made.stderr
    token = (await run(tmp_path, "token", "gail")).stdout.strip()
    assert (await run(tmp_path, "disable", "gail")).stdout == "disabled gail\n"
    async with SqliteCallStore(tmp_path / SQLITE_FILE, recover=False) as store:
        client = await aiohttp_client(make_app(store, CallMetrics()))
        assert (await client.get("/api/me", headers={"Authorization": f"Bearer {token}"})).status == 401
        await client.close()
    assert "gail  agent  disabled" in (await run(tmp_path, "list")).stdout


@pytest.mark.parametrize("args, stdin, problem", [
    (("add", "x1", "--role", "supervisor", "--password-stdin"), "short\n", "at least 8 characters"),
    (("add", "x2", "--role", "supervisor"), "", "use --password-stdin"),
    (("add", "sam", "--role", "agent", "--password-stdin"), PASSWORD + "\n", "already exists"),
    (("add", "bad name", "--role", "agent", "--password-stdin"), PASSWORD + "\n", "user names are"),
    (("token", "nobody"), "", "no user named 'nobody'"),
    (("passwd", "nobody", "--password-stdin"), PASSWORD + "\n", "no user named 'nobody'"),
])
def test_a_users_command_that_cannot_be_done_says_why_in_one_line(data_dir, args, stdin, problem):
    done = voicebot(data_dir, *args, stdin=stdin)
    assert done.returncode == 2 and problem in done.stderr and len(done.stderr.strip().splitlines()) == 1, done.stderr
