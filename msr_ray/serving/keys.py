"""API keys of the served app: the keys it accepts, whether a request carries one, and the
refusal to serve beyond loopback without keys (no Ray).

Keys come from a file (one a line; blank lines and ``#`` comment lines ignored) and from
an environment variable holding comma-separated keys. Only their SHA-256 digests are kept,
and a presented key's digest is compared with every one of them by
``hmac.compare_digest``, all of them each time: how long a check takes says nothing about
which key matched or how much of one. No message or repr here contains a key.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from msr_ray.config import ConfigError, ServeConfig
from msr_ray.serving.requests import RequestError

# What a key may hold: visible ASCII, no spaces (it travels in an HTTP header).
_KEY = re.compile(r"[!-~]+")
HOW_TO_SEND = "send `Authorization: Bearer <key>` or `X-API-Key: <key>`"


def _checked(keys: list[str], source: str) -> list[str]:
    """``keys`` unchanged; an error naming the key's place (never the key) when one has
    characters no header can carry."""
    for n, key in enumerate(keys, start=1):
        if not _KEY.fullmatch(key):
            raise ConfigError(f"{source}: key {n} is not a key (visible ASCII, no spaces)")
    return keys


def _file_keys(path: str) -> list[str]:
    """The keys of a key file: a missing, unreadable or keyless file is an error."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        why = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise ConfigError(f"api_keys_file {path}: cannot read it: {why}") from None
    lines = (line.strip() for line in text.splitlines())
    keys = [line for line in lines if line and not line.startswith("#")]
    if not keys:
        raise ConfigError(f"api_keys_file {path} holds no keys (one key a line)")
    return _checked(keys, f"api_keys_file {path}")


def _env_keys(name: str, environ: Mapping[str, str]) -> list[str]:
    """The comma-separated keys of an environment variable: unset or empty is an error."""
    keys = [key.strip() for key in environ.get(name, "").split(",") if key.strip()]
    if not keys:
        raise ConfigError(
            f"api_keys_env names {name}, which is unset or empty in this process: set it "
            "to comma-separated keys where the app runs"
        )
    return _checked(keys, f"api_keys_env {name}")


def presented_key(headers: Mapping[str, str]) -> str | None:
    """The key a request carries: ``Authorization: Bearer <key>``, else ``X-API-Key``
    (header names as Starlette's case-insensitive ``Headers`` give them, or lower case)."""
    scheme, _, token = headers.get("authorization", "").strip().partition(" ")
    key = token.strip() if scheme.lower() == "bearer" else headers.get("x-api-key", "").strip()
    return key or None


@dataclass(frozen=True)
class ApiKeys:
    """The keys a replica accepts (their digests) and the routes that need one."""

    digests: tuple[bytes, ...] = field(default=(), repr=False)
    on_reads: bool = False

    @classmethod
    def from_settings(
        cls, settings: ServeConfig, environ: Mapping[str, str] = os.environ
    ) -> ApiKeys:
        """The keys ``settings`` name (file and env var together); a named source that
        holds no keys is a ConfigError, so a misconfigured service never starts open."""
        keys: list[str] = []
        if settings.api_keys_file is not None:
            keys += _file_keys(settings.api_keys_file)
        if settings.api_keys_env is not None:
            keys += _env_keys(settings.api_keys_env, environ)
        digests = tuple(dict.fromkeys(hashlib.sha256(k.encode()).digest() for k in keys))
        return cls(digests, settings.keys_on_reads)

    def check(self, headers: Mapping[str, str], write: bool) -> None:
        """Pass a request to a write route (``write``) or a read route, or refuse it:
        401 without a key (``no_key``), 403 with one that is not accepted (``wrong_key``)."""
        if not self.digests or not (write or self.on_reads):
            return
        key = presented_key(headers)
        if key is None:
            raise RequestError(
                f"this route needs an API key: {HOW_TO_SEND}",
                401,
                "no_key",
                headers={"WWW-Authenticate": "Bearer"},
            )
        digest = hashlib.sha256(key.encode()).digest()
        matched = False
        for known in self.digests:  # every key, every time: no early exit
            matched |= hmac.compare_digest(digest, known)
        if not matched:
            raise RequestError("this API key is not accepted here", 403, "wrong_key")


def is_loopback(host: str | None) -> bool:
    """Whether Serve's HTTP host is reachable from this machine only (None: no proxy)."""
    if host is None or host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:  # another host name, or "" (every address)
        return False


def check_exposure(host: str | None, settings: ServeConfig) -> None:
    """Refuse, in one line, to serve on ``host`` beyond loopback without API keys unless
    the settings say the service is open (``open_without_keys``)."""
    keyed = settings.api_keys_file is not None or settings.api_keys_env is not None
    if is_loopback(host) or keyed or settings.open_without_keys:
        return
    raise ConfigError(
        f"Serve's HTTP host is {host!r}, beyond loopback, and no API keys are configured: "
        "set api_keys_env or api_keys_file in the app's args (or open_without_keys: true "
        "to serve anyone who reaches it)"
    )
