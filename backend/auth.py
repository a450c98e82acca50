"""Who is asking: an API bearer token (HS256 JWT), the browser's signed cookie, or nobody.

The owner decides which jobs a request may see; the client identity decides whose rate
limit and quotas a request counts against.
"""

from __future__ import annotations

import jwt

from backend.owners import PUBLIC_OWNER, owner_from_cookie
from backend.settings import Settings

TOKEN_PREFIX = "token:"


class AuthError(Exception):
    """The request's credentials are present but unusable, or required and missing."""


def owner_from_token(token: str, secret: str) -> str:
    """The owner named by a bearer token's `sub` claim; AuthError when it does not verify."""
    if not secret:
        raise AuthError("bearer tokens are not enabled on this server (JWT_SECRET is unset)")
    try:
        claims = jwt.decode(token, secret, algorithms=["HS256"], options={"require": ["sub"]})
    except jwt.PyJWTError as exc:
        raise AuthError(f"invalid bearer token ({exc})") from exc
    subject = claims["sub"]
    if not isinstance(subject, str) or not subject or len(subject) > 200:
        raise AuthError("invalid bearer token (sub must be a non-empty string)")
    return TOKEN_PREFIX + subject


def bearer_token(authorization: str | None) -> str | None:
    if authorization is None:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise AuthError("expected 'Authorization: Bearer <token>'")
    return token.strip()


def resolve_owner(
    authorization: str | None, cookie: str | None, settings: Settings, for_api: bool = True
) -> str:
    """The owner of a request: token first, then cookie, then the shared public owner."""
    token = bearer_token(authorization)
    if token is not None:
        return owner_from_token(token, settings.jwt_secret)
    owner = owner_from_cookie(cookie, settings.secret_key)
    if owner is not None:
        return owner
    if for_api and settings.api_auth_required:
        raise AuthError("a bearer token is required")
    return PUBLIC_OWNER


def client_identity(authorization: str | None, client_host: str | None, settings: Settings) -> str:
    """Whose limits a request counts against: a valid token's owner, else the client address."""
    try:
        token = bearer_token(authorization)
        if token is not None:
            return owner_from_token(token, settings.jwt_secret)
    except AuthError:
        pass
    return f"ip:{client_host or 'unknown'}"
