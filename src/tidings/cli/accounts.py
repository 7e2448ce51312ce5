"""``tidings user add | list | disable | enable | reset``.

The rules for names and passwords are the HTTP API's (``core/auth.py``), so
an account the CLI creates is one the API would have accepted; every change
goes through the core's services (cli/services.py), so disabling an account
also closes its open sessions on nodes that share a Redis bus.
"""

from __future__ import annotations

import argparse
import getpass
import os
import secrets
import sys
import time

import msgspec

from tidings.cli.errors import OperatorError
from tidings.cli.services import using_services
from tidings.core.auth import check_password, check_username
from tidings.core.errors import TidingsError
from tidings.core.models import Account
from tidings.settings import Settings

PASSWORD_ENV = "TIDINGS_NEW_PASSWORD"


def new_password(args: argparse.Namespace) -> tuple[str, bool]:
    """The password from --password, $TIDINGS_NEW_PASSWORD, a prompt (on a
    terminal) or, failing all, a generated one; and whether it was generated."""
    password = args.password or os.environ.get(PASSWORD_ENV)
    if not password and sys.stdin.isatty():
        password = getpass.getpass(f"new password for {args.name}: ")
    if not password:
        return secrets.token_urlsafe(12), True
    try:
        check_password(password)
    except TidingsError as exc:
        raise OperatorError(f"{exc.message}; choose a longer one") from exc
    return password, False


async def add(args: argparse.Namespace, settings: Settings) -> int:
    try:
        check_username(args.name)
    except TidingsError as exc:
        raise OperatorError(exc.message) from exc
    password, generated = new_password(args)
    async with using_services(settings) as services:
        try:
            user = await services.auth.register(args.name, password)
        except TidingsError as exc:
            raise OperatorError(f"cannot add {args.name!r}: {exc.message}") from exc
    out = {"user_id": user.user_id, "username": user.username}
    if generated:
        out["password"] = password
    print(msgspec.json.encode(out).decode())
    return 0


async def list_accounts(args: argparse.Namespace, settings: Settings) -> int:
    async with using_services(settings) as services:
        rows = await services.accounts.list_accounts()
    if args.json:
        for account in rows:
            print(msgspec.json.encode(_account_json(account)).decode())
        return 0
    print(f"{'USERNAME':<32} {'USER ID':<34} {'CREATED (UTC)':<19} {'STATUS':<8} DEVICES")
    for account in rows:
        status = "disabled" if account.disabled_at is not None else "active"
        print(
            f"{account.user.username:<32} {account.user.user_id:<34}"
            f" {_utc(account.user.created_at):<19} {status:<8} {account.live_devices}"
        )
    return 0


def _account_json(account: Account) -> dict[str, object]:
    return {
        "user_id": account.user.user_id,
        "username": account.user.username,
        "created_at": account.user.created_at,
        "disabled_at": account.disabled_at,
        "live_devices": account.live_devices,
    }


def _utc(ms: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(ms / 1000))


async def disable(args: argparse.Namespace, settings: Settings) -> int:
    return await _set_disabled(args.name, True, settings)


async def enable(args: argparse.Namespace, settings: Settings) -> int:
    return await _set_disabled(args.name, False, settings)


async def _set_disabled(name: str, disabled: bool, settings: Settings) -> int:
    async with using_services(settings) as services:
        user = await services.find(name)
        changed = await services.accounts.set_disabled(user.user_id, disabled)
    state = "disabled" if disabled else "enabled"
    print(
        msgspec.json.encode(
            {"user_id": user.user_id, "username": user.username, state: True, "changed": changed}
        ).decode()
    )
    return 0


async def reset(args: argparse.Namespace, settings: Settings) -> int:
    password, generated = new_password(args)
    async with using_services(settings) as services:
        user = await services.find(args.name)
        revoked = await services.auth.reset_password(user.user_id, password)
        await services.accounts.signed_out(user.user_id)
    out: dict[str, object] = {
        "user_id": user.user_id,
        "username": user.username,
        "revoked_devices": revoked,
    }
    if generated:
        out["password"] = password
    print(msgspec.json.encode(out).decode())
    return 0
