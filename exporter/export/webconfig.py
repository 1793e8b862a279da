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

Unknown keys are errors, as in exporter-toolkit.
"""

from __future__ import annotations

import base64
import hashlib
import ssl
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from exporter.config import ConfigError

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


@dataclass(frozen=True)
class WebConfig:
    ssl_context: ssl.SSLContext | None = None
    users: Mapping[str, bytes] = field(default_factory=dict)  # user -> bcrypt hash
    headers: Mapping[str, str] = field(default_factory=dict)


def _mapping(value: Any, where: str, allowed: set[str], path: Path) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ConfigError(f"--web.config.file {path}: {where} must be a mapping")
    for k in value:
        if k not in allowed:
            raise ConfigError(f"--web.config.file {path}: unknown key {where}.{k}")
    return value


def load_web_config(path: Path) -> WebConfig:
    """Read and validate the file; build the TLS context. Raises ConfigError naming the key."""
    try:
        doc = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as e:
        raise ConfigError(f"--web.config.file {path}: {e}") from None
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
    users = _mapping(
        top.get("basic_auth_users"),
        "basic_auth_users",
        set((top.get("basic_auth_users") or {}).keys()),
        path,
    )
    http = _mapping(top.get("http_server_config"), "http_server_config", {"headers"}, path)
    base = path.parent

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
        if not isinstance(hashed, str) or not hashed.startswith(("$2a$", "$2b$", "$2y$")):
            raise ConfigError(
                f"--web.config.file {path}: basic_auth_users.{user}: expected a bcrypt hash"
            )
        hashes[str(user)] = hashed.encode()
    headers = _mapping(
        http.get("headers"),
        "http_server_config.headers",
        set((http.get("headers") or {}).keys()),
        path,
    )
    return WebConfig(ctx, hashes, {str(k): str(v) for k, v in headers.items()})


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
        if cred is None or cred[0] not in self._users:
            return False
        key = (cred[0], hashlib.sha256(cred[1].encode()).digest())
        with self._lock:
            return True if key in self._ok else None

    def verify(self, header: str) -> bool:
        cred = self._credential(header)
        if cred is None or (hashed := self._users.get(cred[0])) is None:
            return False
        user, password = cred
        if not self._bcrypt.checkpw(password.encode(), hashed.replace(b"$2y$", b"$2b$", 1)):
            return False
        with self._lock:
            if len(self._ok) > 1000:
                self._ok.clear()
            self._ok.add((user, hashlib.sha256(password.encode()).digest()))
        return True
