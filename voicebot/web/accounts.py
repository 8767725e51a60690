"""Logins as an operator manages them: ``voicebot users add|list|disable|passwd|token|tokens|revoke``.

An agent login also gets its row in the agents table (SIP URI, queues), which is
what decides the queues the agent sees. Passwords come from a prompt (twice) or,
for scripts, one line of standard input; API tokens are printed once and only
their hash is stored.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import re
import sys
from dataclasses import dataclass
from typing import Sequence

from voicebot.errors import VoicebotError
from voicebot.sip.settings import sip_uri_parts
from voicebot.storage.base import CallStore
from voicebot.storage.records import DEFAULT_QUEUE, ROLES, Agent, ApiToken, Role, User
from voicebot.web.auth import Passwords, check_password_rules, new_api_token, secret_hash

#: letters, digits and . _ @ - ; the name is also the agent's name in the queue
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,63}")
#: how much of a token's hash names it in ``users tokens`` and ``users revoke``
TOKEN_ID_CHARS = 12


class AccountError(VoicebotError):
    """A user command cannot be done (one line)."""


@dataclass(frozen=True, slots=True)
class Account:
    user: User
    #: the agents-table row of an agent login
    agent: Agent | None
    tokens: int


def check_name(name: str) -> str:
    if not _NAME.fullmatch(name):
        raise AccountError(f"user names are 1-64 letters, digits, '.', '_', '@' or '-', starting with a letter"
                           f" or digit, not {name!r}")
    return name


def parse_queues(text: str) -> tuple[str, ...]:
    """ "general, benefits" -> ("general", "benefits"); "" -> () (a login that sees no caller, e.g. a scraper's)."""
    return tuple(dict.fromkeys(q.strip() for q in text.split(",") if q.strip()))


async def add_account(store: CallStore, passwords: Passwords, name: str, role: Role, password: str, *,
                      queues: Sequence[str] = (DEFAULT_QUEUE,), sip_uri: str = "") -> Account:
    check_name(name)
    if role not in ROLES:
        raise AccountError(f"role must be one of {', '.join(ROLES)}, not {role!r}")
    if sip_uri and sip_uri_parts(sip_uri) is None:
        raise AccountError(f"an agent's SIP URI looks like sip:anna@pbx.example.org, not {sip_uri!r}")
    _check_password(password)
    if await store.get_user(name) is not None:
        raise AccountError(f"a user named {name!r} already exists")
    user = await store.add_user(User(name, role, await passwords.hash(password)))
    agent = None
    if role == "agent":
        try:
            agent = await store.save_agent(name, sip_uri, list(queues))
        except BaseException:
            await store.delete_user(name)
            raise
    return Account(user, agent, 0)


async def change_password(store: CallStore, passwords: Passwords, name: str, password: str) -> None:
    _check_password(password)
    if not await store.set_password_hash(name, await passwords.hash(password)):
        raise AccountError(f"no user named {name!r}")


async def disable_account(store: CallStore, name: str) -> None:
    """The user's sessions and tokens stop working at once (the store checks ``disabled``); an agent goes away."""
    if not await store.set_user_disabled(name, True):
        raise AccountError(f"no user named {name!r}")
    await store.set_agent_state(name, "away")


async def issue_token(store: CallStore, name: str, label: str = "") -> tuple[str, ApiToken]:
    """A new API token (shown once) and what the store keeps of it."""
    user = await store.get_user(name)
    if user is None:
        raise AccountError(f"no user named {name!r}")
    if user.disabled:
        raise AccountError(f"{name} is disabled")
    token = new_api_token()
    return token, await store.add_api_token(name, secret_hash(token), label)


async def list_accounts(store: CallStore) -> list[Account]:
    return [Account(u, await store.get_agent(u.name) if u.role == "agent" else None,
                    len(await store.list_api_tokens(u.name))) for u in await store.list_users()]


async def revoke_token(store: CallStore, name: str, token_id: str) -> ApiToken:
    """Revoke the user's token whose hash starts with ``token_id`` (as ``users tokens`` shows it)."""
    token_id = token_id.strip().lower()
    found = [t for t in await store.list_api_tokens(name) if token_id and t.token_hash.startswith(token_id)]
    if len(found) != 1:
        raise AccountError(f"{name} has {'no' if not found else 'more than one'} token with id {token_id!r}")
    await store.revoke_api_token(found[0].token_hash)
    return found[0]


# ---------------------------------------------------------------------- the command line


async def run_users(args: argparse.Namespace, store: CallStore) -> None:
    """One ``users`` command against an open store; results on stdout, notes on stderr."""
    passwords = Passwords()
    action = args.users
    if action == "add":
        queues = parse_queues(args.queues) if args.role == "agent" else ()
        password = read_password(args.password_stdin)
        made = await add_account(store, passwords, args.name, args.role, password, queues=queues,
                                 sip_uri=args.sip_uri)
        extra = (f" serving {', '.join(made.agent.queues) or 'no queue'} at {made.agent.sip_uri or '(no SIP URI yet)'}"
                 if made.agent else "")
        print(f"added {made.user.role} {made.user.name}{extra}")
    elif action == "list":
        for account in await list_accounts(store):
            u, agent = account.user, account.agent
            where = f"  queues {','.join(agent.queues) or '-'}  {agent.sip_uri or '-'}" if agent else ""
            print(f"{u.name}  {u.role}  {'disabled' if u.disabled else 'enabled'}  tokens {account.tokens}{where}")
    elif action == "disable":
        await disable_account(store, args.name)
        print(f"disabled {args.name}")
    elif action == "passwd":
        await change_password(store, passwords, args.name, read_password(args.password_stdin))
        print(f"password of {args.name} changed")
    elif action == "token":
        token, kept = await issue_token(store, args.name, args.label)
        print(token)
        print(f"voicebot: token {kept.token_hash[:TOKEN_ID_CHARS]} for {args.name}: shown only now; send it as "
              f"'Authorization: Bearer <token>'", file=sys.stderr)
    elif action == "tokens":
        for t in await store.list_api_tokens(args.name):
            print(f"{t.token_hash[:TOKEN_ID_CHARS]}  {t.created_at.isoformat(timespec='seconds')}  {t.label or '-'}")
    elif action == "revoke":
        gone = await revoke_token(store, args.name, args.token_id)
        print(f"revoked token {gone.token_hash[:TOKEN_ID_CHARS]} of {args.name}")


def read_password(from_stdin: bool) -> str:
    if from_stdin:
        line = sys.stdin.readline()
        return line.rstrip("\r\n")
    if not sys.stdin.isatty():
        raise AccountError("no terminal to ask for the password: use --password-stdin")
    first = getpass.getpass("password: ")
    if getpass.getpass("again: ") != first:
        raise AccountError("the passwords differ")
    return first


def _check_password(password: str) -> None:
    try:
        check_password_rules(password)
    except ValueError as e:
        raise AccountError(str(e)) from None


def users_command(args: argparse.Namespace, store: CallStore) -> None:
    """Open ``store`` (not yet open), run the command, close it."""

    async def run() -> None:
        async with store:
            await run_users(args, store)

    asyncio.run(run())
