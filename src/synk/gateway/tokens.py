"""Signed tokens (JWT, HS256) as the gateway's ``authenticate`` and ``authorize`` hooks.

A backend that knows who a user is mints a token; the browser hands it to
the gateway as the ``token`` query parameter (browsers cannot set headers
on a websocket; other clients may send ``Authorization: Bearer TOKEN``).
The gateway checks the signature and the expiry at connect, and the token's
``keys`` claim says which keys the client may subscribe to: exact keys, or
prefixes written with a trailing ``*`` (``"world:*"``; ``*`` is not a key
character, so it cannot clash with a key). Tokens are RFC 7519 JSON Web
Tokens, verified with PyJWT (``pip install 'synk-live[jwt]'``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from synk.errors import ConfigError

if TYPE_CHECKING:
    from synk.gateway.config import Handshake

__all__ = ["TokenAuth", "mint"]

log = logging.getLogger("synk.gateway")

#: The only algorithm accepted: fixed here, never read from the token (RFC 8725, section 2.1).
ALGORITHM = "HS256"
#: An HMAC key shorter than the hash (32 bytes for SHA-256) weakens it (RFC 7518, section 3.2).
MIN_SECRET = 32


def _jwt() -> Any:
    try:
        import jwt
    except ImportError as exc:  # pragma: no cover - the dev install has it
        raise ConfigError("signed tokens need PyJWT: pip install 'synk-live[jwt]'") from exc
    return jwt


def _check_secret(secret: str | bytes) -> bytes:
    raw = secret.encode() if isinstance(secret, str) else secret
    if len(raw) < MIN_SECRET:
        raise ConfigError(f"the token secret is {len(raw)} bytes long; HS256 needs at least {MIN_SECRET}")
    return raw


def mint(secret: str | bytes, subject: str, keys: Iterable[str], ttl: float = 3600.0, **claims: Any) -> str:
    """A token for ``subject`` allowing ``keys`` (exact, or prefixes ending in ``*``), valid ``ttl`` seconds.

    What a backend does (with any JWT library: the format is the standard one)::

        token = synk.gateway.tokens.mint(secret, "alice", ["world:*"], ttl=600)
    """
    now = int(time.time())
    payload = {"sub": subject, "keys": list(keys), "iat": now, "exp": now + int(ttl), **claims}
    token: str = _jwt().encode(payload, _check_secret(secret), algorithm=ALGORITHM)
    return token


def key_allowed(patterns: Iterable[str], key: str) -> bool:
    """Whether ``key`` is one of ``patterns``, or starts with a pattern's part before its trailing ``*``."""
    for pattern in patterns:
        if pattern.endswith("*"):
            if key.startswith(pattern[:-1]):
                return True
        elif key == pattern:
            return True
    return False


class TokenAuth:
    """``authenticate`` and ``authorize`` hooks checking HS256 tokens signed with ``secret``.

    ``Gateway(url, authenticate=auth.authenticate, authorize=auth.authorize)``;
    ``synk serve --jwt-secret-env NAME`` does this with the secret from an
    environment variable. The identity is the token's claims (a dict): the
    simulation gets it with each client message.
    """

    def __init__(self, secret: str | bytes, *, audience: str | None = None, issuer: str | None = None, leeway: float = 0.0) -> None:
        self._secret = _check_secret(secret)
        self._jwt = _jwt()
        self.audience = audience
        self.issuer = issuer
        self.leeway = leeway

    @staticmethod
    def token_of(handshake: Handshake) -> str | None:
        """The token of a handshake: the ``token`` query parameter, else an ``Authorization: Bearer`` header."""
        token = handshake.query.get("token")
        if token:
            return token
        scheme, _, value = handshake.headers.get("authorization", "").partition(" ")
        return value.strip() or None if scheme.lower() == "bearer" else None

    def authenticate(self, handshake: Handshake) -> dict[str, Any] | None:
        """The token's claims if it is well signed, unexpired and has a ``keys`` list; else None (refused)."""
        token = self.token_of(handshake)
        if token is None:
            log.info("synk token refused: none given (a token query parameter or an Authorization: Bearer header)")
            return None
        try:
            claims: dict[str, Any] = self._jwt.decode(
                token,
                self._secret,
                algorithms=[ALGORITHM],
                audience=self.audience,
                issuer=self.issuer,
                leeway=self.leeway,
                options={"require": ["exp"]},
            )
        except self._jwt.InvalidTokenError as exc:
            log.info("synk token refused: %s", exc)  # expired, bad signature, wrong audience...
            return None
        keys = claims.get("keys")
        if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
            log.info("synk token refused: its keys claim is not a list of strings")
            return None
        return claims

    @staticmethod
    def authorize(identity: Any, key: str) -> bool:
        """Whether the token's ``keys`` claim allows ``key``."""
        return isinstance(identity, dict) and key_allowed(identity.get("keys", []), key)

    @staticmethod
    def admin(identity: Any) -> bool:
        """Whether the token says ``"admin": true``: it may see the inspector (``mint(..., admin=True)``)."""
        return isinstance(identity, dict) and identity.get("admin") is True
