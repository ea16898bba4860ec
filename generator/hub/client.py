"""Talking to the Hub: the token and the endpoint, patience with a rate-limiting or busy Hub (retries,
timeouts), and every failure as one line that says what to do and never holds the token."""
from __future__ import annotations

import contextlib
import dataclasses
import importlib
import os
import re
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar



T = TypeVar("T")


# Statuses worth waiting for: rate limiting and a busy or restarting Hub.
RETRY_STATUSES = (429, 502, 503, 504)
CONFLICT_STATUSES = (409, 412)


_LOGIN_HINT = "run `hf auth login` (formerly `huggingface-cli login`) or set HF_TOKEN"
# Something shaped like a Hugging Face token (``hf_`` + ~34 letters and digits). 30+ catches every real
# one while no sensible repo or folder name matches; used to refuse and to redact, never to authenticate.
_TOKEN_LIKE = re.compile(r"(?<![A-Za-z0-9])hf_[A-Za-z0-9]{30,}")


class PushError(Exception):
    """A push that failed: one line saying what failed and what to do. Never contains the token."""

    def __init__(self, message: str):
        # Token-shaped text is redacted too: a token pasted as the folder or repo name is never echoed.
        super().__init__(_TOKEN_LIKE.sub("hf_***", " ".join(str(message).split())))


class LocalRunError(PushError):
    """The folder to push is not a complete gen-samples run: bad input, nothing was sent."""


@dataclasses.dataclass(frozen=True)
class RetryPolicy:
    """How long to keep trying when the Hub rate-limits us or is busy."""

    timeout_s: float = 60.0  # a request that gets no answer for this long fails
    attempts: int = 4  # tries per step on 429 / 502 / 503 / 504
    first_wait_s: float = 2.0  # doubled after each try; a Retry-After header wins (capped at max_wait_s)
    max_wait_s: float = 60.0

    @classmethod
    def from_env(cls) -> "RetryPolicy":
        def number(name: str, default: float) -> float:
            raw = os.environ.get(name)
            try:
                return float(raw) if raw else default
            except ValueError:
                raise PushError(f"{name}={raw!r} is not a number: set it to a number of seconds or unset it") from None

        return cls(
            timeout_s=number("GEN_SAMPLES_HUB_TIMEOUT", cls.timeout_s),
            attempts=max(1, int(number("GEN_SAMPLES_HUB_RETRIES", cls.attempts))),
            first_wait_s=number("GEN_SAMPLES_HUB_RETRY_WAIT", cls.first_wait_s),
        )


def _retrying(fn: Callable[[], T], policy: RetryPolicy, console, step: str, conflict_retries: int = 0) -> T:
    """Call ``fn``; wait and retry on rate limiting or a busy Hub, retry conflicts ``conflict_retries`` times.

    huggingface_hub already retries uploads and some metadata calls on 429/5xx; this covers the calls
    it makes only once (whoami, repo info, commits) and gives every step the same patience.
    """
    attempt = 0
    while True:
        try:
            return fn()
        except Exception as err:
            status = _status(err)
            if status in CONFLICT_STATUSES and conflict_retries > 0:
                conflict_retries -= 1
                _say(console, f"[yellow]conflicting commit while {step}; retrying on the new head[/]")
                continue
            attempt += 1
            if status not in RETRY_STATUSES or attempt >= policy.attempts:
                raise
            wait = min(policy.max_wait_s, _retry_after(err) or policy.first_wait_s * 2 ** (attempt - 1))
            reason = "rate limited" if status == 429 else f"Hub busy ({status})"
            _say(console, f"[yellow]{reason} while {step}; retry {attempt}/{policy.attempts - 1} in {wait:g}s[/]")
            time.sleep(wait)


def _say(console, message: str) -> None:
    if console is not None:
        console.print(message, soft_wrap=True)


def _api(endpoint: str, token: str):
    from huggingface_hub import HfApi

    return HfApi(endpoint=endpoint, token=token, library_name="gen-samples")


def _endpoint() -> str:
    # Read from huggingface_hub, not datasets: failing early (no token, no network) stays cheap.
    from huggingface_hub import constants

    return constants.ENDPOINT.rstrip("/")


def _resolve_token(token: str | None) -> str:
    # Stripped, as huggingface_hub reads HF_TOKEN: a blank one (HF_TOKEN=" ") is no token, not a " " to
    # look for in the card, and a pasted trailing newline is not part of the token.
    for given in (token, os.environ.get("HF_TOKEN")):
        if given and given.strip():
            return given.strip()
    from huggingface_hub import get_token

    saved = get_token()
    if not saved:
        raise PushError(f"no Hugging Face token found: {_LOGIN_HINT}, then push again")
    return saved


def _default_console():
    from rich.console import Console

    return Console(stderr=True, highlight=False)


@dataclasses.dataclass
class _Where:
    """What a push was doing, for the error message."""

    step: str
    repo_id: str
    local: Path | None = None


@contextlib.contextmanager
def _one_line_errors(token: str, endpoint: str, policy: RetryPolicy, where: _Where) -> Iterator[None]:
    """Turn whatever goes wrong while talking to the Hub into a one-line PushError without the token."""
    try:
        with _request_timeout(policy.timeout_s):
            yield
    except PushError as err:
        raise type(err)(_redact(str(err), token)) from None
    except Exception as err:
        message = _explain(err, where=where, endpoint=endpoint, policy=policy)
        raise PushError(_redact(message, token)) from None


@contextlib.contextmanager
def _request_timeout(seconds: float) -> Iterator[None]:
    """Give every huggingface_hub request that has no timeout of its own one of ``seconds``.

    huggingface_hub's client has no default timeout and many of its calls pass ``timeout=None``, so an
    endpoint that stops answering would hang the push forever. We install, through the public
    ``set_client_factory``, a client whose transport fills in the missing timeouts, and put the
    previous factory back afterwards. (Worker processes of ``num_proc`` use their own default client.)
    """
    from huggingface_hub.utils import _http, get_session, set_client_factory

    previous = getattr(_http, "_GLOBAL_CLIENT_FACTORY", None)
    if previous is None:  # unknown huggingface_hub internals: keep its behaviour rather than guess
        yield
        return
    # The HTTP library huggingface_hub is built on: httpx for 1.x, httpx2 for 2.x.
    httpx = importlib.import_module(type(get_session()).__module__.split(".")[0])
    hooks = get_session().event_hooks  # keep its request hooks (offline mode, request ids)

    class DefaultTimeout(httpx.BaseTransport):
        def __init__(self) -> None:
            self.inner = httpx.HTTPTransport()

        def handle_request(self, request):
            given = request.extensions.get("timeout") or {}
            request.extensions["timeout"] = {
                key: seconds if given.get(key) is None else given[key] for key in ("connect", "read", "write", "pool")
            }
            return self.inner.handle_request(request)

        def close(self) -> None:
            self.inner.close()

    set_client_factory(lambda: httpx.Client(event_hooks=hooks, follow_redirects=True, transport=DefaultTimeout()))
    try:
        yield
    finally:
        set_client_factory(previous)


def _causes(err: BaseException) -> Iterator[BaseException]:
    """``err`` and what caused it (datasets and huggingface_hub wrap the HTTP errors we care about)."""
    seen: set[int] = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        yield err
        err = err.__cause__ or err.__context__


def _is(err: BaseException, *class_names: str) -> bool:
    return any(cls.__name__ in class_names for cls in type(err).__mro__)


def _status(err: BaseException) -> int | None:
    for cause in _causes(err):
        response = getattr(cause, "response", None)
        if response is not None and getattr(response, "status_code", None):
            return int(response.status_code)
    return None


def _retry_after(err: BaseException) -> float | None:
    for cause in _causes(err):
        response = getattr(cause, "response", None)
        if response is not None:
            value = response.headers.get("Retry-After", "")
            return float(value) if value.strip().isdigit() else None
    return None


def _server_message(err: BaseException) -> str:
    for cause in _causes(err):
        response = getattr(cause, "response", None)
        if response is not None:
            return response.headers.get("X-Error-Message", "")
    return ""


def _explain(err: BaseException, *, where: _Where, endpoint: str, policy: RetryPolicy) -> str:
    """One line for a failed push: what failed, and what the user can do about it."""
    step, repo_id = where.step, where.repo_id
    host = endpoint.split("://", 1)[-1].split("/")[0]
    again = "then push again"
    if "/" in repo_id and where.local is not None:
        again = f"then run `gen-samples push {where.local} --repo {repo_id}` again"
    status = _status(err)
    causes = list(_causes(err))
    if any(_is(c, "LocalTokenNotFoundError") for c in causes):
        return f"no Hugging Face token found: {_LOGIN_HINT}, then push again"
    if any(_is(c, "OfflineModeIsEnabled") for c in causes):
        return f"HF_HUB_OFFLINE is set, so nothing can be pushed: unset it, {again}"
    if status == 401:
        return (
            f"the Hub at {host} rejected your token (401 Unauthorized) while {step}: it is invalid or expired; "
            f"create a new one at https://huggingface.co/settings/tokens and {_LOGIN_HINT}"
        )
    if status == 403:
        return (
            f"your token may not write to dataset {repo_id} (403 Forbidden) while {step}: the repo belongs to "
            f"another user or org, or the token is read-only; push to a repo under your own user "
            f"(--repo <your user>/<name>) or use a token with write access"
        )
    if status == 404 and any(_is(c, "RepositoryNotFoundError") for c in causes):
        return (
            f"dataset {repo_id} not found or not accessible with your token (404) while {step}: "
            f"check the repo id and the token's permissions"
        )
    if status in CONFLICT_STATUSES:
        return (
            f"someone else committed to {repo_id} while we pushed ({status} conflict, still there after a retry): "
            f"wait for the other push to finish, {again}"
        )
    if status == 429:
        return (
            f"the Hub rate-limited us (429 Too Many Requests) after {policy.attempts} tries while {step}: "
            f"wait a few minutes, {again}"
        )
    if status is not None and status >= 500:
        return f"the Hub had a server error ({status}) while {step}: try again later; {again}"
    timeouts = ("TimeoutException", "TimeoutError", "ReadTimeout", "ConnectTimeout")
    if any(_is(c, *timeouts) or isinstance(c, socket.timeout) for c in causes):
        return (
            f"the Hub at {host} did not answer within {policy.timeout_s:g}s while {step}: check your network "
            f"or set GEN_SAMPLES_HUB_TIMEOUT to wait longer, {again}"
        )
    if any(_is(c, "ConnectError", "ConnectionError", "NetworkError", "OSError") for c in causes):
        text = " ".join(str(c) for c in causes).lower()
        dns = ("name or service not known", "name resolution", "nodename nor servname", "getaddrinfo")
        if any(isinstance(c, socket.gaierror) for c in causes) or any(s in text for s in dns):
            return (
                f"cannot resolve {host} (DNS lookup failed: no network?) while {step}: "
                f"check your connection and HF_ENDPOINT, {again}"
            )
        if "refused" in text:
            return (
                f"connection refused by {host} while {step}: the Hub is unreachable "
                f"(no network, or a wrong HF_ENDPOINT); {again}"
            )
        if "reset" in text or "disconnected" in text or "closed" in text:
            return f"the connection to {host} dropped while {step}: check your network, {again}"
    if status is not None:
        detail = _server_message(err) or type(err).__name__
        return f"the Hub answered {status} while {step}: {detail}; {again}"
    if any(_is(c, "ValueError") and "metadata" in str(c).lower() for c in causes):
        reason = str(err).splitlines()[-1]
        return f"the dataset card's YAML header was refused while {step}: {reason}; fix README.md, {again}"
    first_line = next((line for line in str(err).splitlines() if line.strip()), "")
    return f"push to {repo_id} failed while {step}: {type(err).__name__}: {first_line}"


def _redact(text: str, token: str | None) -> str:
    return text.replace(token, "***") if token else text
