"""``--web.config.file``: TLS and basic auth in the Prometheus exporter-toolkit format.

    tls_server_config:
      cert_file: server.crt          # paths relative to this file
      key_file: server.key
      client_auth_type: RequireAndVerifyClientCert   # optional: mutual TLS
      client_ca_file: ca.crt
      min_version: TLS12             # TLS10 … TLS13
    basic_auth_users:
      prometheus: $2y$10$…           # bcrypt hashes (htpasswd -nBC 10 "" | tr -d ':\\n')
    http_server_config:
      headers: {X-Frame-Options: deny}

Unknown keys are errors, as in exporter-toolkit, and so are response headers other than the
security headers exporter-toolkit allows.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
import ssl
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from exporter.config import ConfigError
from exporter.yamlsafe import YamlError, check_regular, load_yaml, read_bounded

TLS_VERSIONS = {
    "TLS10": ssl.TLSVersion.TLSv1,
    "TLS11": ssl.TLSVersion.TLSv1_1,
    "TLS12": ssl.TLSVersion.TLSv1_2,
    "TLS13": ssl.TLSVersion.TLSv1_3,
}
CLIENT_AUTH = {
    "NoClientCert": ssl.CERT_NONE,
    "RequestClientCert": ssl.CERT_OPTIONAL,
    "RequireAnyClientCert": ssl.CERT_REQUIRED,
    "VerifyClientCertIfGiven": ssl.CERT_OPTIONAL,
    "RequireAndVerifyClientCert": ssl.CERT_REQUIRED,
}


# The response headers exporter-toolkit lets a web config set.
ALLOWED_HEADERS = (
    "Strict-Transport-Security",
    "X-Frame-Options",
    "X-Content-Type-Options",
    "X-XSS-Protection",
    "Content-Security-Policy",
)
_BCRYPT = re.compile(r"\$2[aby]\$(\d\d)\$[./A-Za-z0-9]{53}")
MAX_BCRYPT_COST = 16  # ~5 s a check here; more would tie up the checking thread for minutes


@dataclass(frozen=True)
class WebConfig:
    ssl_context: ssl.SSLContext | None = None
    users: Mapping[str, bytes] = field(default_factory=dict)  # user -> bcrypt hash
    headers: Mapping[str, str] = field(default_factory=dict)
    files: tuple[Path, ...] = ()  # the file and every file it names: watched for changes


def signature(files: tuple[Path, ...]) -> tuple[tuple[int, int, int, int] | None, ...]:
    """What tells a changed file: its inode, device, size and modification time, through
    symbolic links (a Kubernetes Secret volume swaps a link to a new directory); None for a file
    that cannot be read now (a rotation in progress)."""
    out: list[tuple[int, int, int, int] | None] = []
    for f in files:
        try:
            st = f.stat()
        except OSError:
            out.append(None)
            continue
        out.append((st.st_ino, st.st_dev, st.st_size, st.st_mtime_ns))
    return tuple(out)


def _mapping(value: Any, where: str, allowed: set[str] | None, path: Path) -> dict[str, Any]:
    """``value`` as a mapping with text keys, all in ``allowed`` (None: any key)."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ConfigError(f"--web.config.file {path}: {where} must be a mapping")
    for k in value:
        if not isinstance(k, str) or (allowed is not None and k not in allowed):
            raise ConfigError(f"--web.config.file {path}: unknown key {where}.{k}")
    return value


def load_web_config(path: Path) -> WebConfig:
    """Read and validate the file; build the TLS context. Raises ConfigError naming the key."""
    try:
        doc = load_yaml(
            read_bounded(path, f"--web.config.file {path}"), f"--web.config.file {path}"
        )
    except YamlError as e:
        raise ConfigError(str(e)) from None
    top = _mapping(
        doc, "top level", {"tls_server_config", "basic_auth_users", "http_server_config"}, path
    )
    tls = _mapping(
        top.get("tls_server_config"),
        "tls_server_config",
        {
            "cert_file",
            "key_file",
            "client_auth_type",
            "client_ca_file",
            "min_version",
            "max_version",
        },
        path,
    )
    users = _mapping(top.get("basic_auth_users"), "basic_auth_users", None, path)
    http = _mapping(top.get("http_server_config"), "http_server_config", {"headers"}, path)
    for key, value in tls.items():
        if not isinstance(value, str) or not value:
            raise ConfigError(f"--web.config.file {path}: tls_server_config.{key}: expected text")
    base = path.parent
    files = [path] + [
        base / tls[k] for k in ("cert_file", "key_file", "client_ca_file") if k in tls
    ]
    for f in files[1:]:  # read by OpenSSL: a FIFO or a device would hold it forever
        try:
            check_regular(f, f"--web.config.file {path}: {f.name}")
        except YamlError as e:
            raise ConfigError(str(e)) from None

    ctx = None
    if tls:
        if not tls.get("cert_file") or not tls.get("key_file"):
            raise ConfigError(
                f"--web.config.file {path}: tls_server_config needs cert_file and key_file"
            )
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        try:
            ctx.load_cert_chain(base / tls["cert_file"], base / tls["key_file"])
        except (OSError, ssl.SSLError) as e:
            raise ConfigError(f"--web.config.file {path}: tls_server_config: {e}") from None
        for key, attr in (("min_version", "minimum_version"), ("max_version", "maximum_version")):
            if key in tls:
                if tls[key] not in TLS_VERSIONS:
                    raise ConfigError(
                        f"--web.config.file {path}: tls_server_config.{key}: "
                        f"{tls[key]!r} is not one of {', '.join(TLS_VERSIONS)}"
                    )
                setattr(ctx, attr, TLS_VERSIONS[tls[key]])
        if "min_version" not in tls:
            ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        auth = tls.get("client_auth_type", "NoClientCert")
        if auth not in CLIENT_AUTH:
            raise ConfigError(
                f"--web.config.file {path}: tls_server_config.client_auth_type: "
                f"{auth!r} is not one of {', '.join(CLIENT_AUTH)}"
            )
        ctx.verify_mode = CLIENT_AUTH[auth]
        if tls.get("client_ca_file"):
            try:
                ctx.load_verify_locations(base / tls["client_ca_file"])
            except (OSError, ssl.SSLError) as e:
                raise ConfigError(f"--web.config.file {path}: client_ca_file: {e}") from None
        elif auth == "RequireAndVerifyClientCert":
            raise ConfigError(
                f"--web.config.file {path}: RequireAndVerifyClientCert needs client_ca_file"
            )
    hashes: dict[str, bytes] = {}
    for user, hashed in users.items():
        m = _BCRYPT.fullmatch(hashed) if isinstance(hashed, str) else None
        if m is None or not isinstance(user, str) or ":" in user:
            raise ConfigError(
                f"--web.config.file {path}: basic_auth_users.{user}: expected a bcrypt hash"
            )
        if not 4 <= int(m.group(1)) <= MAX_BCRYPT_COST:
            raise ConfigError(
                f"--web.config.file {path}: basic_auth_users.{user}: bcrypt cost "
                f"{int(m.group(1))} is outside 4..{MAX_BCRYPT_COST} (10-12 is usual)"
            )
        hashes[user] = hashed.encode()
    headers = _mapping(
        http.get("headers"), "http_server_config.headers", set(ALLOWED_HEADERS), path
    )
    for name, value in headers.items():
        if not isinstance(value, str) or not value.isprintable():
            raise ConfigError(
                f"--web.config.file {path}: http_server_config.headers.{name}: "
                "expected one line of printable text"
            )
    return WebConfig(ctx, hashes, dict(headers), tuple(files))


class BasicAuth:
    """Checks ``Authorization: Basic`` credentials for the HTTP server. bcrypt is slow on purpose
    (tens of ms), so a verified credential is remembered by its SHA-256: a scraper every 15 s
    must not cost a bcrypt each time. :meth:`known` is the fast path; :meth:`verify` the slow one,
    which the server runs off its event loop."""

    def __init__(self, users: Mapping[str, bytes]) -> None:
        import bcrypt  # only needed when basic auth is configured

        self._users, self._bcrypt = users, bcrypt
        self._ok: set[tuple[str, bytes]] = set()
        self._lock = threading.Lock()
        # An unknown user is checked against this hash, at the cost of the real ones, so a 401
        # takes as long for a user that does not exist as for a wrong password.
        cost = max((int(h[4:6]) for h in users.values()), default=10)
        self._dummy = bcrypt.hashpw(os.urandom(16).hex().encode(), bcrypt.gensalt(cost))

    @staticmethod
    def _credential(header: str) -> tuple[str, str] | None:
        if not header.startswith("Basic "):
            return None
        try:
            user, _, password = base64.b64decode(header[6:], validate=True).decode().partition(":")
        except (ValueError, UnicodeDecodeError):
            return None
        return user, password

    def known(self, header: str) -> bool | None:
        cred = self._credential(header)
        if cred is None:
            return False  # no credential at all: nothing about any user is revealed
        key = (cred[0], hashlib.sha256(cred[1].encode()).digest())
        with self._lock:
            return True if key in self._ok else None

    def verify(self, header: str) -> bool:
        cred = self._credential(header)
        if cred is None:
            return False
        user, password = cred
        hashed = self._users.get(user)
        secret = password.encode()
        if hashed is None or len(secret) > 72:
            # bcrypt reads at most 72 bytes; longer passwords are refused, as exporter-toolkit
            # refuses them. Either way the answer costs one bcrypt, like a wrong password.
            self._bcrypt.checkpw(secret[:72], self._dummy)
            return False
        if not self._bcrypt.checkpw(secret, hashed.replace(b"$2y$", b"$2b$", 1)):
            return False
        with self._lock:
            if len(self._ok) > 1000:
                self._ok.clear()
            self._ok.add((user, hashlib.sha256(password.encode()).digest()))
        return True
