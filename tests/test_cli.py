"""The slawatch command as a user runs it: serve, check, generate, SIGHUP reload, web config."""

from __future__ import annotations

import base64
import os
import signal
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import bcrypt
import pytest
import trustme
import yaml

from conftest import REPO, free_port, icmp_allowed, minimal_config, wait_http, write_config

SLAWATCH = [sys.executable, "-m", "slawatch"]


def run(*args: str, cwd: Path = REPO, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([*SLAWATCH, *args], cwd=cwd, capture_output=True, text=True, timeout=120,
                          env={**os.environ, **(env or {})})


def start_serve(stop_processes, *args: str, cwd: Path) -> tuple[subprocess.Popen, Path]:
    log = cwd / f"serve-{len(stop_processes)}.log"
    process = subprocess.Popen([*SLAWATCH, "serve", *args], cwd=cwd, stdout=log.open("w"),
                               stderr=subprocess.STDOUT)
    stop_processes.append(process)
    return process, log


def test_serve_rejects_invalid_config(tmp_path: Path):
    path = write_config(tmp_path / "bad.yml", {"targets": [{"service": "web", "colour": "red"}]})

    completed = run("serve", f"--config.file={path}", f"--web.listen-address=127.0.0.1:{free_port()}",
                    cwd=tmp_path)

    assert completed.returncode == 1
    assert f"{path}: invalid config" in completed.stderr
    assert "targets[0].colour: unknown or unsupported key" in completed.stderr
    assert "targets[0].url: required key is missing" in completed.stderr


def test_invalid_config_reported_in_chinese(tmp_path: Path, monkeypatch):
    path = write_config(tmp_path / "bad.yml", {"targets": [{"service": "web", "colour": "red"}]})
    monkeypatch.setenv("SLAWATCH_LOCALE", "zh-CN")

    completed = run("check", f"--config.file={path}", cwd=tmp_path)

    assert completed.returncode == 1
    assert completed.stderr.startswith(f"{path}：配置无效：\n")
    assert "targets[0].colour: unknown or unsupported key" in completed.stderr
    assert completed.stderr.rstrip().endswith("配置未加载。请修正上面列出的问题后重新运行命令。")


@pytest.mark.parametrize("address", ["localhost", "9115", "127.0.0.1:http", "127.0.0.1:70000"])
def test_serve_rejects_bad_listen_address(tmp_path: Path, address: str):
    completed = run("serve", f"--web.listen-address={address}", cwd=tmp_path)

    assert completed.returncode == 2
    assert f"invalid --web.listen-address {address!r}" in completed.stderr


def test_check_reports_in_chinese(tmp_path: Path):
    path = write_config(tmp_path / "zh.yml", minimal_config(tmp_path, **{"global": {"locale": "zh-CN"}}))

    completed = run("check", f"--config.file={path}")

    assert completed.returncode == 0, completed.stderr
    assert "配置有效" in completed.stdout


def secret_config(tmp_path: Path, webhook: dict, sources: dict | None = None) -> Path:
    data = minimal_config(tmp_path)
    data["tickets"]["webhook"] = webhook
    data["tickets"]["sources"] = sources or {}
    return write_config(tmp_path / "slawatch.yml", data)


def test_check_reports_secrets_that_serve_reads(tmp_path: Path):
    (tmp_path / "empty-token").write_text("", encoding="utf-8")
    missing = tmp_path / "missing-secret"
    path = secret_config(tmp_path, {"secret_file": str(missing), "zendesk_secret_file": str(missing)}, {
        "rt": {"url": "http://127.0.0.1:1", "token_file": str(tmp_path / "empty-token")},
        "zammad": {"url": "http://127.0.0.1:1", "token_file": str(missing)},
    })

    checked = run("check", f"--config.file={path}", cwd=tmp_path)
    served = run("serve", f"--config.file={path}", f"--web.listen-address=127.0.0.1:{free_port()}", cwd=tmp_path)
    serve_error = served.stderr.strip().splitlines()[-1]

    assert checked.returncode == 1
    assert "config is valid" not in checked.stdout
    assert f"{path}: `slawatch serve` cannot use these secrets:" in checked.stderr
    assert f"  - tickets.webhook.secret_file: cannot read the webhook secret file {missing}: No such file or " \
           "directory: check the path and the file's permissions" in checked.stderr
    assert f"  - tickets.webhook.zendesk_secret_file: cannot read the webhook secret file {missing}" in checked.stderr
    assert f"  - tickets.sources.rt.token_file: {tmp_path / 'empty-token'} is empty: write the secret into it" \
        in checked.stderr
    assert f"  - tickets.sources.zammad.token_file: cannot read {missing}: No such file or directory" in checked.stderr
    assert "fails every poll" in checked.stderr
    assert served.returncode == 1
    assert f"  - {serve_error}\n" in checked.stderr


@pytest.mark.parametrize(("value", "problem"), [(None, "is not set"), ("  ", "is empty")])
def test_check_reports_webhook_secret_env(tmp_path: Path, value, problem):
    name = "SLAWATCH_TEST_CHECK_WEBHOOK_SECRET"
    path = secret_config(tmp_path, {"secret_env": name})
    env = {k: v for k, v in os.environ.items() if k != name}
    if value is not None:
        env[name] = value

    completed = subprocess.run([*SLAWATCH, "check", f"--config.file={path}"], cwd=tmp_path, capture_output=True,
                               text=True, timeout=120, env=env)

    assert completed.returncode == 1
    assert f"tickets.webhook.secret_env: environment variable {name} {problem}" in completed.stderr


def test_check_accepts_usable_secrets(tmp_path: Path):
    for name in ("zendesk-secret", "rt-password", "zendesk-token"):
        (tmp_path / name).write_text(f"{name}\n", encoding="utf-8")
    path = secret_config(tmp_path, {"secret_env": "SLAWATCH_TEST_CHECK_SECRET",
                                    "zendesk_secret_file": str(tmp_path / "zendesk-secret")}, {
        "rt": {"url": "http://127.0.0.1:1", "user": "sla", "password_file": str(tmp_path / "rt-password")},
        "zendesk": {"url": "http://127.0.0.1:1", "email": "a@example.org",
                    "token_file": str(tmp_path / "zendesk-token")},
    })

    completed = run("check", f"--config.file={path}", cwd=tmp_path, env={"SLAWATCH_TEST_CHECK_SECRET": "shared"})

    assert completed.returncode == 0, completed.stderr
    assert f"{path}: config is valid" in completed.stdout
    assert "cannot use these secrets" not in completed.stderr


def test_check_reports_secrets_in_chinese(tmp_path: Path):
    path = secret_config(tmp_path, {"secret_file": str(tmp_path / "missing")})

    completed = run("check", f"--config.file={path}", cwd=tmp_path, env={"SLAWATCH_LOCALE": "zh-CN"})

    assert completed.returncode == 1
    assert f"{path}：`slawatch serve` 无法使用以下密钥：" in completed.stderr
    assert "tickets.webhook.secret_file: cannot read the webhook secret file" in completed.stderr
    assert "每次轮询都会失败" in completed.stderr


def test_check_default_config_with_tools():
    completed = run("check")

    assert completed.returncode == 0, completed.stdout + completed.stderr
    assert "config is valid" in completed.stdout
    if "promtool is not on PATH" not in completed.stdout:
        assert "promtool: rules passed" in completed.stdout


def test_generate_check_detects_stale_files(tmp_path: Path):
    written = run("generate", f"--output-dir={tmp_path}")
    fresh = run("generate", "--check", f"--output-dir={tmp_path}")
    rule_file = next((tmp_path / "rules").glob("*.yml"))
    rule_file.write_text(rule_file.read_text() + "\n# edited by hand\n")
    stale = run("generate", "--check", f"--output-dir={tmp_path}")

    assert written.returncode == 0, written.stderr
    assert fresh.returncode == 0, fresh.stderr
    assert stale.returncode == 1
    assert f"{rule_file} differs from what `slawatch generate` writes now" in stale.stderr


def test_committed_generated_files_are_current():
    completed = run("generate", "--check", f"--output-dir={REPO}")

    assert completed.returncode == 0, completed.stderr


def scrape(url: str, **kwargs) -> str:
    with urllib.request.urlopen(url, timeout=5, **kwargs) as response:
        return response.read().decode()


def test_sighup_reload_keeps_running_config(tmp_path: Path, stop_processes):
    port = free_port()
    data = minimal_config(tmp_path)
    path = write_config(tmp_path / "slawatch.yml", data)
    process, log = start_serve(stop_processes, f"--config.file={path}", f"--web.listen-address=127.0.0.1:{port}",
                               cwd=tmp_path)
    wait_http(f"http://127.0.0.1:{port}/-/healthy", process=process)

    path.write_text("targets: [{service: web}]\n", encoding="utf-8")
    process.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and "slawatch_config_last_reload_successful 0.0" not in \
            scrape(f"http://127.0.0.1:{port}/metrics"):
        time.sleep(0.2)
    metrics = scrape(f"http://127.0.0.1:{port}/metrics")
    healthy = scrape(f"http://127.0.0.1:{port}/-/healthy")

    assert "slawatch_config_last_reload_successful 0.0" in metrics
    assert healthy == "Healthy\n"
    assert "Error reloading config, keeping the running config" in log.read_text()
    assert "targets[0].url: required key is missing" in log.read_text()


def test_web_config_tls_and_basic_auth(tmp_path: Path, stop_processes):
    ca = trustme.CA()
    leaf = ca.issue_cert("127.0.0.1")
    leaf.cert_chain_pems[0].write_to_path(str(tmp_path / "cert.pem"))
    leaf.private_key_pem.write_to_path(str(tmp_path / "key.pem"))
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    hashed = bcrypt.hashpw(b"open sesame", bcrypt.gensalt(rounds=4)).decode().replace("$2b$", "$2y$", 1)
    web_config = write_config(tmp_path / "web-config.yml", {
        "tls_server_config": {"cert_file": "cert.pem", "key_file": "key.pem"},
        "basic_auth_users": {"prometheus": hashed},
    })
    config = write_config(tmp_path / "slawatch.yml", minimal_config(tmp_path))
    port = free_port()
    process, log = start_serve(stop_processes, f"--config.file={config}", f"--web.config.file={web_config}",
                               f"--web.listen-address=127.0.0.1:{port}", cwd=tmp_path)
    context = ssl.create_default_context(cafile=str(tmp_path / "ca.pem"))
    url = f"https://127.0.0.1:{port}/metrics"

    deadline = time.monotonic() + 20
    status = None
    while time.monotonic() < deadline and process.poll() is None:
        try:
            scrape(url, context=context)
        except urllib.error.HTTPError as error:
            status = error.code
            break
        except (urllib.error.URLError, OSError):
            time.sleep(0.2)
    request = urllib.request.Request(url)
    request.add_header("Authorization", "Basic " + base64.b64encode(b"prometheus:open sesame").decode())
    body = urllib.request.urlopen(request, timeout=5, context=context).read().decode()
    wrong = urllib.request.Request(url)
    wrong.add_header("Authorization", "Basic " + base64.b64encode(b"prometheus:wrong").decode())

    assert status == 401, log.read_text()
    assert "slawatch_build_info" in body
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(wrong, timeout=5, context=context)
    assert caught.value.code == 401


def test_web_config_rejects_plain_password(tmp_path: Path):
    web_config = write_config(tmp_path / "web.yml", {"basic_auth_users": {"admin": "hunter2"}, "tls": {}})

    completed = run("serve", f"--web.config.file={web_config}", f"--web.listen-address=127.0.0.1:{free_port()}",
                    cwd=tmp_path)

    assert completed.returncode == 1
    assert "basic_auth_users.admin: expected a bcrypt hash" in completed.stderr
    assert "tls: unknown or unsupported key" in completed.stderr
    assert "hunter2" not in completed.stderr


def test_serve_reports_unusable_database(tmp_path: Path):
    data = minimal_config(tmp_path)
    data["tickets"]["database"] = str(tmp_path / "missing-dir" / "tickets.db")
    path = write_config(tmp_path / "slawatch.yml", data)

    completed = run("serve", f"--config.file={path}", f"--web.listen-address=127.0.0.1:{free_port()}",
                    cwd=tmp_path)

    assert completed.returncode == 1
    assert "cannot open the ticket database" in completed.stderr
    assert "Traceback" not in completed.stderr


def test_check_warns_about_empty_config(tmp_path: Path):
    path = tmp_path / "empty.yml"
    path.write_text("", encoding="utf-8")

    completed = run("check", f"--config.file={path}")

    assert completed.returncode == 0
    assert "the config has no targets and no SLOs" in completed.stderr


def test_serve_logs_are_logfmt_and_json(tmp_path: Path, stop_processes):
    import json as json_module
    import shlex

    config = write_config(tmp_path / "slawatch.yml", minimal_config(tmp_path))
    lines = {}
    for log_format in ("logfmt", "json"):
        port = free_port()
        process, log = start_serve(stop_processes, f"--config.file={config}", f"--log.format={log_format}",
                                   f"--web.listen-address=127.0.0.1:{port}", cwd=tmp_path)
        wait_http(f"http://127.0.0.1:{port}/-/healthy", process=process)
        process.terminate()
        process.wait(timeout=10)
        lines[log_format] = [line for line in log.read_text().splitlines() if line]

    for line in lines["logfmt"]:
        fields = dict(part.split("=", 1) for part in shlex.split(line))
        assert set(fields) >= {"ts", "level", "logger", "msg"}, line
        assert fields["ts"].endswith("Z")
    for line in lines["json"]:
        record = json_module.loads(line)
        assert record["level"] in ("debug", "info", "warning", "error")
    assert any("listening on http://127.0.0.1" in json_module.loads(line)["msg"] for line in lines["json"])


def probe_success_line(port: int, target: str, module: str) -> str:
    query = urllib.parse.urlencode({"target": target, "module": module})
    body = scrape(f"http://127.0.0.1:{port}/probe?{query}")
    return next(line for line in body.splitlines() if line.startswith("probe_success"))


@pytest.mark.parametrize("flag, loop_name", [(None, "uvloop"), ("--event-loop=uvloop", "uvloop"),
                                             ("--event-loop=asyncio", "asyncio")])
def test_serve_probes_on_each_loop(tmp_path: Path, stop_processes, flag, loop_name):
    pytest.importorskip("uvloop")
    data = minimal_config(tmp_path)
    data["modules"]["icmp"] = {"prober": "icmp", "timeout": "2s", "icmp": {"preferred_ip_protocol": "ip4"}}
    config = write_config(tmp_path / "slawatch.yml", data)
    port = free_port()
    args = [f"--config.file={config}", f"--web.listen-address=127.0.0.1:{port}"] + ([flag] if flag else [])
    process, log = start_serve(stop_processes, *args, cwd=tmp_path)
    wait_http(f"http://127.0.0.1:{port}/-/healthy", process=process)

    http = probe_success_line(port, f"http://127.0.0.1:{port}/-/healthy", "http_2xx")
    icmp = probe_success_line(port, "127.0.0.1", "icmp") if icmp_allowed() else None
    process.terminate()
    process.wait(timeout=10)

    assert f"Running on the {loop_name}" in log.read_text()
    assert http == "probe_success 1.0"
    if icmp is not None:
        assert icmp == "probe_success 1.0", log.read_text()


# Runs slawatch in a Python where `import uvloop` raises ImportError, as on a host without uvloop.
WITHOUT_UVLOOP = [sys.executable, "-c", "import sys; sys.modules['uvloop'] = None; from slawatch.cli import main; "
                                        "sys.exit(main(sys.argv[1:]))"]


def test_serve_uvloop_required_but_missing(tmp_path: Path):
    config = write_config(tmp_path / "slawatch.yml", minimal_config(tmp_path))

    completed = subprocess.run([*WITHOUT_UVLOOP, "serve", f"--config.file={config}", "--event-loop=uvloop",
                                f"--web.listen-address=127.0.0.1:{free_port()}"], cwd=tmp_path, capture_output=True,
                               text=True, timeout=60)

    assert completed.returncode == 2
    assert "--event-loop=uvloop requires the uvloop package" in completed.stderr
    assert "pip install uvloop" in completed.stderr


def test_serve_auto_falls_back_to_asyncio(tmp_path: Path, stop_processes):
    config = write_config(tmp_path / "slawatch.yml", minimal_config(tmp_path))
    port = free_port()
    log = tmp_path / "serve.log"
    process = subprocess.Popen([*WITHOUT_UVLOOP, "serve", f"--config.file={config}",
                                f"--web.listen-address=127.0.0.1:{port}"], cwd=tmp_path, stdout=log.open("w"),
                               stderr=subprocess.STDOUT)
    stop_processes.append(process)
    wait_http(f"http://127.0.0.1:{port}/-/healthy", process=process)
    http = probe_success_line(port, f"http://127.0.0.1:{port}/-/healthy", "http_2xx")
    process.terminate()
    process.wait(timeout=10)

    assert "uvloop is not installed" in log.read_text()
    assert "Running on the asyncio event loop" in log.read_text()
    assert http == "probe_success 1.0"


def test_serve_rejects_unknown_event_loop(tmp_path: Path):
    completed = run("serve", "--event-loop=trio", cwd=tmp_path)

    assert completed.returncode == 2
    assert "invalid choice: 'trio'" in completed.stderr
    assert "'auto', 'uvloop', 'asyncio'" in completed.stderr


@pytest.mark.parametrize(("count", "summary"), [(1, "(1 target, 1 SLO)"), (2, "(2 targets, 2 SLOs)")])
def test_check_summary_singular_and_plural(tmp_path: Path, count: int, summary: str):
    targets = [{"service": f"web{i}", "url": f"http://127.0.0.1:{8080 + i}/", "module": "http_2xx"}
               for i in range(count)]
    slos = [{"name": f"web{i}-up", "service": f"web{i}", "sli": "probe_availability", "objective": 99}
            for i in range(count)]
    path = write_config(tmp_path / "slawatch.yml", minimal_config(tmp_path, targets=targets, slos=slos))

    completed = run("check", f"--config.file={path}", cwd=tmp_path, env={"SLAWATCH_LOCALE": "en"})

    assert completed.returncode == 0, completed.stdout + completed.stderr
    assert f"{path}: config is valid {summary}" in completed.stdout
