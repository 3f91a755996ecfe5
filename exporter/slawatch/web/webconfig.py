"""TLS and basic auth for the exporter, from a web-config.yml in the exporter-toolkit format.

Supported keys: tls_server_config.{cert_file, key_file, client_ca_file,
client_auth_type, min_version} and basic_auth_users (user: bcrypt hash).
Every hash is checked at load time, so a malformed one fails the start and
not each login.
Any other key is rejected by name, so a setting is never silently ignored.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
import ssl
from dataclasses import dataclass, field
from pathlib import Path

import bcrypt
import yaml
from aiohttp import web

from ..config import ConfigError

_TLS_KEYS = {"cert_file", "key_file", "client_ca_file", "client_auth_type", "min_version"}
_CLIENT_AUTH = {
    "NoClientCert": ssl.CERT_NONE,
    "RequestClientCert": ssl.CERT_OPTIONAL,
    "VerifyClientCertIfGiven": ssl.CERT_OPTIONAL,
    "RequireAndVerifyClientCert": ssl.CERT_REQUIRED,
}
# Modes that verify a client certificate against client_ca_file. Python's ssl
# module verifies every certificate a client sends (CERT_OPTIONAL too) and,
# unlike Go's crypto/tls, does not fall back to the system roots, so these
# modes need client_ca_file.
_VERIFYING_AUTH = ("RequestClientCert", "VerifyClientCertIfGiven", "RequireAndVerifyClientCert")
_MIN_VERSION = {"TLS12": ssl.TLSVersion.TLSv1_2, "TLS13": ssl.TLSVersion.TLSv1_3}
# A modular-crypt bcrypt hash: version, two-digit cost 04-31, then 22 characters
# of salt and 31 of hash in bcrypt's base64 alphabet.
_BCRYPT_HASH = re.compile(r"^\$2[aby]\$(0[4-9]|[12][0-9]|3[01])\$[./A-Za-z0-9]{53}$")
# Prefixes of other crypt(3) schemes, to name the scheme in the error.
_OTHER_SCHEMES = {"$1$": "MD5-crypt", "$5$": "SHA-256-crypt", "$6$": "SHA-512-crypt", "$apr1$": "Apache MD5",
                  "$argon2": "Argon2", "$y$": "yescrypt", "$7$": "scrypt", "{SHA}": "SHA-1"}
_HASH_HELP = "create one with `htpasswd -nBC 10 \"\" | tr -d ':\\n'`"


@dataclass
class WebConfig:
    ssl_context: ssl.SSLContext | None = None
    users: dict[str, bytes] = field(default_factory=dict)


def load_web_config(path: str | Path) -> WebConfig:
    """Load and check a web-config file; raise ConfigError naming the key and the fix."""
    source = str(path)
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    except OSError as error:
        raise ConfigError(source, [f"cannot read the file: {error.strerror}: check --web.config.file"]) from None
    except yaml.YAMLError as error:
        raise ConfigError(source, [f"invalid YAML: {error}"]) from None
    if not isinstance(data, dict):
        raise ConfigError(source, ["(top level): expected a mapping with tls_server_config and/or basic_auth_users"])

    problems = [f"{key}: unknown or unsupported key: remove it" for key in data
                if key not in ("tls_server_config", "basic_auth_users")]
    config = WebConfig()

    tls = data.get("tls_server_config")
    if tls is not None:
        config.ssl_context = _build_tls(tls, Path(path).parent, problems)

    users = data.get("basic_auth_users") or {}
    if not isinstance(users, dict):
        problems.append("basic_auth_users: expected a mapping of user name to bcrypt hash")
    else:
        for user, hashed in users.items():
            problem = check_bcrypt_hash(hashed)
            if problem:
                problems.append(f"basic_auth_users.{user}: {problem}: {_HASH_HELP}")
            else:
                config.users[str(user)] = hashed.encode()

    if problems:
        raise ConfigError(source, problems)
    return config


def check_bcrypt_hash(hashed: object) -> str | None:
    """Return why `hashed` is not a usable bcrypt hash, or None when it is."""
    if not isinstance(hashed, str) or not hashed.startswith("$"):
        return "expected a bcrypt hash (starting $2a$, $2b$ or $2y$), not a plain password"
    if not hashed.startswith(("$2a$", "$2b$", "$2y$")):
        scheme = next((name for prefix, name in _OTHER_SCHEMES.items() if hashed.startswith(prefix)), None)
        kind = scheme or f"scheme {hashed.split('$')[1]!r}"
        return f"the hash is {kind}, not bcrypt: expected a bcrypt hash starting $2a$, $2b$ or $2y$"
    if not _BCRYPT_HASH.match(hashed):
        return (f"malformed bcrypt hash ({len(hashed)} characters): expected $2a$, $2b$ or $2y$, a two-digit cost "
                "from 04 to 31, $ and 53 characters of salt and hash, 60 characters in all")
    # bcrypt.checkpw raises "Invalid salt" for a salt that does not decode. The
    # same salt at cost 04 (2^4 key expansion rounds) is cheap to check.
    try:
        bcrypt.checkpw(b"", (hashed[:4] + "04" + hashed[6:]).encode())
    except ValueError:
        return "malformed bcrypt hash: its salt (characters 8 to 29) does not decode"
    return None


def _build_tls(tls: object, base: Path, problems: list[str]) -> ssl.SSLContext | None:
    if not isinstance(tls, dict):
        problems.append("tls_server_config: expected a mapping with cert_file and key_file")
        return None
    for key in tls:
        if key not in _TLS_KEYS:
            problems.append(f"tls_server_config.{key}: unknown or unsupported key: remove it")
    for key in ("cert_file", "key_file"):
        if not tls.get(key):
            problems.append(f"tls_server_config.{key}: required key is missing: add the path of the PEM file")
    auth_type = tls.get("client_auth_type", "NoClientCert")
    if auth_type in ("RequireAnyClientCert", "RequireClientCert"):
        problems.append(f"tls_server_config.client_auth_type: {auth_type} is not supported because Python's ssl "
                        "module cannot require a client certificate without verifying it: use "
                        "RequireAndVerifyClientCert with tls_server_config.client_ca_file")
    elif auth_type not in _CLIENT_AUTH:
        problems.append(f"tls_server_config.client_auth_type: unknown value {auth_type!r}: use one of {sorted(_CLIENT_AUTH)}")
    elif auth_type in _VERIFYING_AUTH and not tls.get("client_ca_file"):
        problems.append(f"tls_server_config.client_auth_type: {auth_type} needs tls_server_config.client_ca_file "
                        "to verify client certificates: add client_ca_file with the PEM file of the client CA, "
                        "or set client_auth_type: NoClientCert")
    elif auth_type == "NoClientCert" and tls.get("client_ca_file"):
        problems.append("tls_server_config.client_ca_file is set but tls_server_config.client_auth_type is "
                        "NoClientCert, so no client certificate is checked: set client_auth_type: "
                        "RequireAndVerifyClientCert, or remove client_ca_file")
    min_version = tls.get("min_version", "TLS12")
    if min_version not in _MIN_VERSION:
        problems.append(f"tls_server_config.min_version: unknown value {min_version!r}: use TLS12 or TLS13")
    if problems:
        return None

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = _MIN_VERSION[min_version]
    try:
        context.load_cert_chain(base / tls["cert_file"], base / tls["key_file"])
        if tls.get("client_ca_file"):
            context.load_verify_locations(base / tls["client_ca_file"])
    except (OSError, ssl.SSLError) as error:
        problems.append(f"tls_server_config: cannot load the certificate or key: {error}")
        return None
    context.verify_mode = _CLIENT_AUTH[auth_type]
    return context


def basic_auth_middleware(users: dict[str, bytes]):
    """Build middleware that requires one of `users` on every request."""
    # bcrypt is slow on purpose; remember verified credentials by their SHA-256
    # so that frequent scrapes do not each pay for a bcrypt check.
    verified: set[bytes] = set()

    @web.middleware
    async def middleware(request: web.Request, handler):
        header = request.headers.get("Authorization", "")
        if header.startswith("Basic "):
            try:
                user, _, password = base64.b64decode(header[6:], validate=True).decode().partition(":")
            except (binascii.Error, UnicodeDecodeError):
                user, password = "", ""
            hashed = users.get(user)
            if hashed is not None:
                key = hashlib.sha256(hashed + b"\0" + password.encode()).digest()
                if key in verified or bcrypt.checkpw(password.encode(), hashed):
                    verified.add(key)
                    return await handler(request)
        return web.Response(status=401, text="Unauthorized\n", headers={"WWW-Authenticate": 'Basic realm="slawatch"'})

    return middleware

