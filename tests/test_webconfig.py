"""load_web_config: basic auth hashes and TLS client authentication settings."""

from __future__ import annotations

import ssl
from pathlib import Path

import bcrypt
import pytest
import trustme
import yaml

from slawatch.config import ConfigError
from slawatch.web.webconfig import load_web_config


def write(tmp_path: Path, data: dict) -> Path:
    path = tmp_path / "web.yml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


def problems(tmp_path: Path, data: dict) -> list[str]:
    with pytest.raises(ConfigError) as raised:
        load_web_config(write(tmp_path, data))
    return raised.value.problems


@pytest.fixture
def tls_files(tmp_path: Path) -> dict[str, str]:
    ca = trustme.CA()
    server = ca.issue_cert("127.0.0.1")
    server.cert_chain_pems[0].write_to_path(str(tmp_path / "server.crt"))
    server.private_key_pem.write_to_path(str(tmp_path / "server.key"))
    ca.cert_pem.write_to_path(str(tmp_path / "client-ca.pem"))
    return {"cert_file": "server.crt", "key_file": "server.key"}


def test_bcrypt_hash_accepted(tmp_path: Path):
    hashed = bcrypt.hashpw(b"secret", bcrypt.gensalt(4)).decode()
    for prefix in ("$2a$", "$2b$", "$2y$"):
        config = load_web_config(write(tmp_path, {"basic_auth_users": {"admin": prefix + hashed[4:]}}))
        assert config.users == {"admin": (prefix + hashed[4:]).encode()}


def test_truncated_bcrypt_hash_rejected(tmp_path: Path):
    found = problems(tmp_path, {"basic_auth_users": {"admin": "$2y$10$abcdefghijklmnopqrstuv"}})

    assert len(found) == 1
    assert found[0].startswith("basic_auth_users.admin: malformed bcrypt hash (29 characters)")
    assert "60 characters in all" in found[0]
    assert "htpasswd -nBC 10" in found[0]


def test_undecodable_bcrypt_salt_rejected(tmp_path: Path):
    # Right length and alphabet, but bcrypt.checkpw raises "Invalid salt" for it.
    found = problems(tmp_path, {"basic_auth_users": {"ops": "$2y$10$" + "a" * 53}})

    assert found == [f"basic_auth_users.ops: malformed bcrypt hash: its salt (characters 8 to 29) does not decode: "
                     f"create one with `htpasswd -nBC 10 \"\" | tr -d ':\\n'`"]


@pytest.mark.parametrize("cost", ["03", "32"])
def test_bcrypt_cost_out_of_range(tmp_path: Path, cost: str):
    hashed = bcrypt.hashpw(b"secret", bcrypt.gensalt(4)).decode()

    found = problems(tmp_path, {"basic_auth_users": {"admin": hashed[:4] + cost + hashed[6:]}})

    assert "cost from 04 to 31" in found[0]


def test_md5_crypt_hash_named(tmp_path: Path):
    found = problems(tmp_path, {"basic_auth_users": {"admin": "$1$saltsalt$qjXMvbEw8oaL.CzflDugX/"}})

    assert found[0].startswith("basic_auth_users.admin: the hash is MD5-crypt, not bcrypt: ")
    assert "$2a$, $2b$ or $2y$" in found[0]
    assert "plain password" not in found[0]


def test_plain_password_named(tmp_path: Path):
    found = problems(tmp_path, {"basic_auth_users": {"admin": "hunter2"}})

    assert found[0].startswith("basic_auth_users.admin: expected a bcrypt hash (starting $2a$, $2b$ or $2y$), "
                               "not a plain password")


@pytest.mark.parametrize("auth_type", ["RequestClientCert", "VerifyClientCertIfGiven", "RequireAndVerifyClientCert"])
def test_verifying_client_auth_needs_ca(tmp_path: Path, tls_files, auth_type: str):
    found = problems(tmp_path, {"tls_server_config": {**tls_files, "client_auth_type": auth_type}})

    assert len(found) == 1
    assert found[0].startswith(f"tls_server_config.client_auth_type: {auth_type} needs "
                               "tls_server_config.client_ca_file")
    assert "add client_ca_file" in found[0]


@pytest.mark.parametrize("auth_type", ["RequestClientCert", "VerifyClientCertIfGiven", "RequireAndVerifyClientCert"])
def test_verifying_client_auth_with_ca(tmp_path: Path, tls_files, auth_type: str):
    config = load_web_config(write(tmp_path, {"tls_server_config": {
        **tls_files, "client_auth_type": auth_type, "client_ca_file": "client-ca.pem"}}))

    expected = ssl.CERT_REQUIRED if auth_type == "RequireAndVerifyClientCert" else ssl.CERT_OPTIONAL
    assert config.ssl_context.verify_mode == expected


@pytest.mark.parametrize("auth_type", [None, "NoClientCert"])
def test_client_ca_without_client_auth(tmp_path: Path, tls_files, auth_type: str | None):
    tls = {**tls_files, "client_ca_file": "client-ca.pem"}
    if auth_type:
        tls["client_auth_type"] = auth_type

    found = problems(tmp_path, {"tls_server_config": tls})

    assert len(found) == 1
    assert "tls_server_config.client_ca_file is set but tls_server_config.client_auth_type is NoClientCert" \
        in found[0]
    assert "RequireAndVerifyClientCert" in found[0]


def test_require_any_client_cert_rejected(tmp_path: Path, tls_files):
    found = problems(tmp_path, {"tls_server_config": {
        **tls_files, "client_auth_type": "RequireAnyClientCert", "client_ca_file": "client-ca.pem"}})

    assert len(found) == 1
    assert found[0].startswith("tls_server_config.client_auth_type: RequireAnyClientCert is not supported")
    assert "use RequireAndVerifyClientCert with tls_server_config.client_ca_file" in found[0]


def test_no_client_cert_without_ca(tmp_path: Path, tls_files):
    config = load_web_config(write(tmp_path, {"tls_server_config": tls_files}))

    assert config.ssl_context.verify_mode == ssl.CERT_NONE
