"""Dashboard users and API tokens (the tables are in ``mailer.models``).

Passwords are hashed with scrypt (RFC 7914, stdlib ``hashlib.scrypt``) and a per-user
random salt; the parameters are stored with the hash so they can be raised later
without invalidating existing users. API tokens are 32 random bytes shown once; only
their SHA-256 is kept: a token is already high-entropy, so a slow hash would add cost
to every API request and no protection.

Plain functions over an open ``Session``; the caller commits (``mailer.core.db.transaction``).
"""

from __future__ import annotations

import base64
import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from mailer.core import signing
from mailer.core.clock import utcnow
from mailer.core.errors import ConflictError, InvalidInput, NotFound
from mailer.models import AdminUser, ApiToken
from subscribers.service import normalise_email

# OWASP suggests N=2^17 (128 MiB per hash); N=2^15 keeps a sign-in near 0.1 s and
# 32 MiB, still memory-hard enough to make GPU guessing costly.
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**15, 8, 1
SCRYPT_MAXMEM = 64 * 1024 * 1024
MIN_PASSWORD = 10
MAX_PASSWORD = 1024  # scrypt of a megabyte-long "password" is a cheap denial of service
TOKEN_PREFIX = "nl_"
# last_used_at is informative; writing it on every API call would turn reads into writes.
LAST_USED_PRECISION = timedelta(minutes=1)


# --- passwords (pure) -------------------------------------------------------------------

def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


def _scrypt(password: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    return hashlib.scrypt(password.encode("utf-8"), salt=salt, n=n, r=r, p=p, maxmem=SCRYPT_MAXMEM, dklen=32)


def hash_password(password: str) -> str:
    """``scrypt$N$r$p$salt$hash`` (base64), with a fresh 16-byte salt."""
    check_password_rules(password)
    salt = secrets.token_bytes(16)
    digest = _scrypt(password, salt, SCRYPT_N, SCRYPT_R, SCRYPT_P)
    return f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${_b64(salt)}${_b64(digest)}"


def password_matches(password: str, stored: str) -> bool:
    """Constant-time comparison of ``password`` against a stored hash."""
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        if scheme != "scrypt":
            return False
        expected = base64.b64decode(digest)
        actual = _scrypt(password[:MAX_PASSWORD], base64.b64decode(salt), int(n), int(r), int(p))
    except (ValueError, TypeError):
        return False
    return signing.same(actual, expected)


def check_password_rules(password: str) -> None:
    if not isinstance(password, str) or len(password) < MIN_PASSWORD:
        raise InvalidInput(f"a password needs at least {MIN_PASSWORD} characters")
    if len(password) > MAX_PASSWORD:
        raise InvalidInput(f"a password is at most {MAX_PASSWORD} characters")


# A hash of nothing anyone knows, checked when the email is unknown, so a sign-in takes
# as long for a missing user as for a wrong password (no user enumeration by timing).
_DUMMY_HASH = f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${_b64(b'0' * 16)}${_b64(b'0' * 32)}"


# --- users ------------------------------------------------------------------------------

def _email_key(email: str) -> str:
    return normalise_email(email).lower()


def create_user(session: Session, *, email: str, password: str) -> AdminUser:
    """A new dashboard user. ``ConflictError`` if the address is taken."""
    key = _email_key(email)
    password_hash = hash_password(password)
    if session.scalar(select(AdminUser.id).where(AdminUser.email == key)) is not None:
        raise ConflictError(f"there is already a user {key}")
    user = AdminUser(email=key, password_hash=password_hash, session_epoch=0, created_at=utcnow())
    session.add(user)
    session.flush()
    return user


def set_password(session: Session, *, email: str, password: str) -> AdminUser:
    """Change a password; every open dashboard session of the user ends."""
    user = find_user(session, email)
    user.password_hash = hash_password(password)
    user.session_epoch += 1
    session.flush()
    return user


def find_user(session: Session, email: str) -> AdminUser:
    found = session.scalar(select(AdminUser).where(AdminUser.email == _email_key(email)))
    if found is None:
        raise NotFound(f"no user {email!r}")
    return found


def verify_password(session: Session, *, email: str, password: str) -> AdminUser | None:
    """The user if ``password`` is theirs, else None (same time either way)."""
    try:
        key = _email_key(email)
    except InvalidInput:
        key = None
    user = session.scalar(select(AdminUser).where(AdminUser.email == key)) if key else None
    ok = password_matches(password or "", user.password_hash if user else _DUMMY_HASH)
    if not (ok and user):
        return None
    user.last_login_at = utcnow()
    session.flush()
    return user


def end_sessions(session: Session, *, user_id: int) -> None:
    user = session.get(AdminUser, user_id)
    if user is not None:
        user.session_epoch += 1
        session.flush()


# --- API tokens -------------------------------------------------------------------------

def token_digest(plaintext: str) -> str:
    return hashlib.sha256(plaintext.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class NewToken:
    id: int
    name: str
    plaintext: str  # shown once; not stored


def create_token(session: Session, *, name: str, user_id: int | None = None) -> NewToken:
    """A new API token. The plaintext is returned here and never again."""
    name = (name or "").strip()
    if not name or len(name) > 100 or any(ord(c) < 32 for c in name):
        raise InvalidInput("a token needs a one-line name of at most 100 characters")
    plaintext = TOKEN_PREFIX + secrets.token_urlsafe(32)
    token = ApiToken(name=name, token_hash=token_digest(plaintext), user_id=user_id, created_at=utcnow())
    session.add(token)
    session.flush()
    return NewToken(token.id, token.name, plaintext)


def check_token(session: Session, plaintext: str | None, *, now: datetime | None = None) -> ApiToken | None:
    """The token row for ``plaintext``, or None. The lookup is by SHA-256, so the time
    it takes says nothing about how close a guess was."""
    if not plaintext or len(plaintext) > 200:
        return None
    token = session.scalar(select(ApiToken).where(ApiToken.token_hash == token_digest(plaintext)))
    if token is None:
        return None
    now = now or utcnow()
    last = token.last_used_at
    if last is None or now - last >= LAST_USED_PRECISION:
        token.last_used_at = now
        session.flush()
    return token


def revoke_token(session: Session, *, token_id: int) -> None:
    token = session.get(ApiToken, token_id)
    if token is None:
        raise NotFound(f"no token {token_id}")
    session.delete(token)
    session.flush()


def list_tokens(session: Session) -> list[ApiToken]:
    return list(session.scalars(select(ApiToken).order_by(ApiToken.id)))
