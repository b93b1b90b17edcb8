"""Storage URLs: parsed, checked, and kept free of secrets.

Secrets stay out of what is printed or stored: `without_secrets` alone knows where a URL carries
one (`describe` masks, `public_url` drops).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote_plus

import sqlalchemy

from search.errors import UsageError

STORAGE_ENV = "ARCHSEARCH_STORAGE"  # a storage URL that stays off command lines (and out of `ps`)
JOURNAL_PREFIX = "journal:"


# A query parameter or a `key=value` setting whose key names a secret, in any spelling or case: libpq's
# password and sslpassword, PGPASSWORD, passwd, pass, pwd, secret, token. A `...file` key (libpq's
# passfile) names where a secret is kept, which is no secret.
_SECRET_KEY = re.compile(r"pass|pwd|secret|token", re.IGNORECASE)
# A `key=value` setting inside a value (PostgreSQL's `options=-c password=...`, a conninfo string).
_SECRET_SETTING = re.compile(
    r"(?P<key>[A-Za-z0-9_.-]*(?:pass|pwd|secret|token)[A-Za-z0-9_.-]*)(?P<eq>\s*=\s*)(?P<value>'[^']*'|\"[^\"]*\"|[^\s&;]+)",
    re.IGNORECASE,
)
MASK = "***"
_QUERY_PAIR = r"([?&;])([^=&;#]*)=([^&;#]*)"


def is_secret_key(key: str) -> bool:
    """Whether a URL's query parameter (or a setting inside one) named `key` carries a secret."""
    plain = re.sub(r"[^a-z]", "", key.lower())
    return bool(_SECRET_KEY.search(plain)) and not plain.endswith("file")


def _has_secret_setting(value: str) -> bool:
    return any(is_secret_key(match["key"]) for match in _SECRET_SETTING.finditer(value))


def _mask_settings(text: str) -> str:
    return _SECRET_SETTING.sub(lambda m: f"{m['key']}{m['eq']}{MASK}" if is_secret_key(m["key"]) else m[0], text)


def without_secrets(url: str, *, drop: bool = False) -> str:
    """`url` with every secret it carries masked as `***` (for messages), or dropped (`drop`: what may
    be stored, printed in a command or passed on argv).

    The one place that knows where a storage URL can carry a secret: the password after `user:`,
    query parameters whose key names one (`?password=`, `?PassWord=`, `?passwd=`, `?sslpassword=`,
    `?PGPASSWORD=`...), and `key=value` settings inside any part (`?options=-c password=...`). A
    dropped password comes back from ~/.pgpass, PGPASSWORD or ARCHSEARCH_STORAGE, never from a
    place that other users (`ps`), the dashboard's API or a shared log can read. A URL that does
    not parse is masked as text; it is never stored."""
    if url.startswith(JOURNAL_PREFIX):
        return url
    try:
        parsed = sqlalchemy.engine.make_url(url)
    except (sqlalchemy.exc.ArgumentError, ValueError):
        return _mask_unparsed(url)
    query: dict[str, Any] = {}
    for key, value in parsed.query.items():
        values = value if isinstance(value, tuple) else (value,)
        if is_secret_key(key) or any(_has_secret_setting(v) for v in values):
            if not drop:
                query[key] = MASK if is_secret_key(key) else tuple(_mask_settings(v) for v in values)
        else:
            query[key] = value
    query = {k: v[0] if isinstance(v, tuple) and len(v) == 1 else v for k, v in query.items()}
    password = None if drop or not parsed.password else MASK
    database = parsed.database and (parsed.database if drop else _mask_settings(parsed.database))
    # URL.set ignores None, so the URL is built again.
    bare = sqlalchemy.engine.URL.create(
        parsed.drivername, parsed.username, password, parsed.host, parsed.port, database, query
    )
    if parsed == bare:
        return url  # nothing to hide: the URL as typed
    return bare.render_as_string(hide_password=False).replace(quote(MASK, safe=""), MASK)


def _mask_unparsed(url: str) -> str:
    """A URL that SQLAlchemy cannot parse may still carry a password after `user:`, in its query or in a
    setting; hide them all."""
    masked = re.sub(r"(//[^/@]*?:)[^/@]*@", rf"\1{MASK}@", url)
    masked = re.sub(
        _QUERY_PAIR,
        lambda m: (
            f"{m[1]}{m[2]}={MASK}"
            if is_secret_key(unquote_plus(m[2])) or _has_secret_setting(unquote_plus(m[3]))
            else m[0]
        ),
        masked,
    )
    return _mask_settings(masked)


def describe(url: str) -> str:
    """The URL with every secret masked, for messages."""
    return without_secrets(url)


def public_url(url: str) -> str:
    """The URL without its secrets: what may be stored, printed in a command or passed on argv."""
    return without_secrets(url, drop=True)


def has_password(url: str) -> bool:
    return public_url(url) != url


def scrub(text: str, url: str) -> str:
    """`text` (a driver's error, say) with any secret of `url` in it masked: a driver may quote its URL."""
    for secret in _secret_values(url):
        text = text.replace(secret, MASK)
    return text


def _secret_values(url: str) -> list[str]:
    found = [m["value"].strip("'\"") for m in _SECRET_SETTING.finditer(url) if is_secret_key(m["key"])]
    try:
        parsed = sqlalchemy.engine.make_url(url)
    except (sqlalchemy.exc.ArgumentError, ValueError):  # found as _mask_unparsed finds them
        found += re.findall(r"//[^/@]*?:([^/@]*)@", url)
        for _, key, value in re.findall(_QUERY_PAIR, url):
            key, value = unquote_plus(key), unquote_plus(value)
            found += [value] if is_secret_key(key) else []
            found += [m["value"].strip("'\"") for m in _SECRET_SETTING.finditer(value) if is_secret_key(m["key"])]
        return sorted({v for v in found if v}, key=len, reverse=True)
    if parsed.password:
        found.append(str(parsed.password))
    for key, value in parsed.query.items():
        for one in value if isinstance(value, tuple) else (value,):
            if is_secret_key(key):
                found.append(one)
            found += [m["value"].strip("'\"") for m in _SECRET_SETTING.finditer(one) if is_secret_key(m["key"])]
    return sorted({v for v in found if v}, key=len, reverse=True)


def parse_url(url: str) -> sqlalchemy.engine.URL:
    """The parsed storage URL; one that does not parse (a port that is not a number, say) is one line."""
    try:
        return sqlalchemy.engine.make_url(url)
    except (sqlalchemy.exc.ArgumentError, ValueError) as error:
        reason = f" ({error})" if isinstance(error, ValueError) and "int()" not in str(error) else ""
        port = " (its port is not a number)" if "int()" in str(error) else reason
        raise UsageError(
            f"storage URL {_mask_unparsed(url)!r} does not parse{scrub(port, url)}; use sqlite:///studies/NAME.db, "
            "postgresql://USER@HOST:PORT/DB (password in ~/.pgpass) or journal:PATH"
        ) from None


def is_in_memory(parsed: sqlalchemy.engine.URL) -> bool:
    """A SQLite URL whose database lives in one process's memory: `sqlite://`, `sqlite:///:memory:`,
    `file::memory:`, `?mode=memory` in any spelling."""
    database = (parsed.database or "").strip()
    mode = parsed.query.get("mode", "")
    modes = mode if isinstance(mode, tuple) else (mode,)
    return (
        database in ("", ":memory:")
        or ":memory:" in database
        or re.search(r"[?&]mode=memory\b", database, re.IGNORECASE) is not None
        or any(m.lower() == "memory" for m in modes)
    )


def sqlite_path(url: str) -> Path | None:
    """The file of a SQLite URL; None for another database, or for a SQLite one in memory."""
    parsed = parse_url(url)
    if parsed.drivername.startswith("sqlite") and not is_in_memory(parsed):
        return Path(parsed.database)
    return None


def default_artifacts(url: str) -> Path:
    """Model files live beside a SQLite or journal file, else under studies/artifacts."""
    if url.startswith(JOURNAL_PREFIX):
        return Path(url[len(JOURNAL_PREFIX) :]).resolve().parent / "artifacts"
    path = sqlite_path(url)
    return (path.resolve().parent if path else Path("studies").resolve()) / "artifacts"
