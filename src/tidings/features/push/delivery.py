"""Sending one push request: a POST through the guard, redirects followed by
hand (each hop checked again), a hard timeout, and an outcome the dispatcher
acts on (sent, gone, retry, failed).

Each kind of target has its own client session, because the guard is the
session's resolver: every connection of a webhook session is made only to
addresses its policy allows, whatever the name resolves to by then.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

import aiohttp
from yarl import URL

from tidings.core.errors import TidingsError
from tidings.features.push.guard import GuardedResolver, Policy, RefusedAddress

MAX_REDIRECTS = 3
REDIRECTS = frozenset({301, 302, 303, 307, 308})


class Result(Enum):
    SENT = "sent"
    GONE = "gone"  # 404 / 410: the subscription no longer exists
    RETRY = "retry"  # 429, 5xx, a timeout, a connection error
    FAILED = "failed"  # any other answer: retrying would get the same


@dataclass(frozen=True)
class Outcome:
    result: Result
    detail: str
    retry_after_s: float | None = None


def _retry_after(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None  # an HTTP date: use our own backoff


def judge(status: int, retry_after: str | None) -> Outcome:
    if 200 <= status < 300:
        return Outcome(Result.SENT, str(status))
    if status in (404, 410):
        return Outcome(Result.GONE, str(status))
    if status == 429 or status >= 500 or status == 408:
        return Outcome(Result.RETRY, str(status), _retry_after(retry_after))
    return Outcome(Result.FAILED, str(status))


class Poster:
    """POSTs to targets of one kind (one policy, one session)."""

    def __init__(self, policy: Policy, timeout_s: float) -> None:
        self._policy = policy
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._session: aiohttp.ClientSession | None = None

    def _open(self) -> aiohttp.ClientSession:
        if self._session is None:
            connector = aiohttp.TCPConnector(resolver=GuardedResolver(self._policy), limit=0)
            self._session = aiohttp.ClientSession(
                connector=connector, timeout=self._timeout, trust_env=False
            )
        return self._session

    async def post(self, url: str, body: bytes, headers: dict[str, str]) -> Outcome:
        session = self._open()
        target: URL | str = url
        try:
            for _ in range(MAX_REDIRECTS + 1):
                checked = self._policy.check_url(str(target))
                async with session.post(
                    checked, data=body, headers=headers, allow_redirects=False
                ) as response:
                    location = response.headers.get("Location")
                    if response.status in REDIRECTS and location:
                        target = checked.join(URL(location))
                        continue
                    return judge(response.status, response.headers.get("Retry-After"))
            return Outcome(Result.FAILED, f"more than {MAX_REDIRECTS} redirects")
        except TidingsError as exc:  # a redirect to a refused target
            return Outcome(Result.FAILED, exc.message)
        except aiohttp.ClientConnectorError as exc:
            if isinstance(exc.os_error, RefusedAddress):
                return Outcome(Result.FAILED, str(exc.os_error))
            return Outcome(Result.RETRY, f"{type(exc).__name__}: {exc}")
        except TimeoutError:
            return Outcome(Result.RETRY, "timed out")
        except (aiohttp.ClientError, OSError) as exc:
            return Outcome(Result.RETRY, f"{type(exc).__name__}: {exc}")

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
