"""Tests of the deployment configs: prometheus/, grafana/provisioning/,
docker-compose.yml and the exporter's Dockerfile.

promtool and a real Prometheus check prometheus.yml, and docker-compose v1
parses the compose file without a Docker daemon. Each test skips only when
its binary is missing from PATH.
"""

from __future__ import annotations

import ipaddress
import json
import re
import shutil
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
import yaml
from conftest import REPO, free_port, require_binary

PROMETHEUS_DIR = REPO / "prometheus"
PROMETHEUS_CONFIG = PROMETHEUS_DIR / "prometheus.yml"
COMPOSE_FILE = REPO / "docker-compose.yml"
DOCKERFILE = REPO / "Dockerfile"
DATASOURCES = REPO / "grafana" / "provisioning" / "datasources" / "prometheus.yml"
DASHBOARD_PROVIDERS = REPO / "grafana" / "provisioning" / "dashboards" / "slawatch.yml"
EXPORTER = "127.0.0.1:9115"


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def prometheus_config() -> dict[str, Any]:
    return load_yaml(PROMETHEUS_CONFIG)


def scrape_job(config: dict[str, Any], name: str) -> dict[str, Any]:
    (job,) = [job for job in config["scrape_configs"] if job["job_name"] == name]
    return job


def compose() -> dict[str, Any]:
    return load_yaml(COMPOSE_FILE)


# ---------------------------------------------------------------------------
# prometheus/prometheus.yml


def test_promtool_check_config_passes():
    promtool = require_binary("promtool")

    result = subprocess.run(
        [promtool, "check", "config", str(PROMETHEUS_CONFIG)], capture_output=True, text=True, timeout=60
    )

    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "is valid prometheus config file syntax" in output
    # promtool also checks each rule file that rule_files matches.
    rule_files = sorted((REPO / "rules").glob("*.yml"))
    assert f"SUCCESS: {len(rule_files)} rule files found" in output
    for rule_file in rule_files:
        assert f"Checking {rule_file.relative_to(REPO)}" in output or f"Checking {rule_file}" in output


def test_promtool_rejects_timeout_above_interval(tmp_path):
    promtool = require_binary("promtool")
    config = prometheus_config()
    config["rule_files"] = []
    scrape_job(config, "blackbox")["scrape_timeout"] = "1m"
    bad = tmp_path / "prometheus.yml"
    bad.write_text(yaml.safe_dump(config), encoding="utf-8")

    result = subprocess.run([promtool, "check", "config", str(bad)], capture_output=True, text=True, timeout=60)

    assert result.returncode != 0
    assert "scrape timeout greater than scrape interval" in result.stdout + result.stderr


def test_global_intervals():
    global_section = prometheus_config()["global"]
    assert global_section["scrape_interval"] == "15s"
    assert global_section["evaluation_interval"] == "15s"
    assert global_section["scrape_timeout"] == "10s"


def test_rule_files_resolve_to_rules_dir():
    rule_files = prometheus_config()["rule_files"]
    assert rule_files == ["../rules/*.yml"]
    assert (PROMETHEUS_DIR / "../rules").resolve() == REPO / "rules"


def test_alerting_targets_local_alertmanager():
    (alertmanager,) = prometheus_config()["alerting"]["alertmanagers"]
    assert alertmanager["static_configs"] == [{"targets": ["127.0.0.1:9093"]}]


@pytest.mark.parametrize(
    ("job", "target"),
    [("slawatch", EXPORTER), ("prometheus", "127.0.0.1:9090"), ("alertmanager", "127.0.0.1:9093")],
)
def test_static_scrape_job(job, target):
    config = scrape_job(prometheus_config(), job)
    assert config["static_configs"] == [{"targets": [target]}]
    assert config.get("metrics_path", "/metrics") == "/metrics"


def test_scrape_job_names():
    names = [job["job_name"] for job in prometheus_config()["scrape_configs"]]
    assert sorted(names) == ["alertmanager", "blackbox", "prometheus", "slawatch"]


def test_blackbox_relabelling():
    job = scrape_job(prometheus_config(), "blackbox")

    assert job["metrics_path"] == "/probe"
    assert job["params"] == {"module": ["http_2xx"]}
    assert job["scrape_timeout"] == "10s"
    assert job["file_sd_configs"][0]["files"] == ["targets/*.yml"]
    assert job["relabel_configs"] == [
        {"source_labels": ["__address__"], "target_label": "__param_target"},
        {"source_labels": ["__param_target"], "target_label": "instance"},
        {"target_label": "__address__", "replacement": EXPORTER},
        {"source_labels": ["__module"], "regex": "(.+)", "target_label": "__param_module"},
    ]


def blackbox_target_groups() -> list[dict[str, Any]]:
    files = sorted((PROMETHEUS_DIR / "targets").glob("*.yml"))
    assert files, "prometheus/targets/ has no *.yml target file"
    return [group for path in files for group in load_yaml(path)]


def test_blackbox_targets_are_loopback():
    targets = [target for group in blackbox_target_groups() for target in group["targets"]]

    assert "http://127.0.0.1:9090/-/healthy" in targets
    for target in targets:
        host = urllib.parse.urlsplit(target if "://" in target else f"//{target}").hostname
        assert host is not None, target
        assert host == "localhost" or ipaddress.ip_address(host).is_loopback, target


def fetch_json(url: str) -> Any:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return json.load(response)
    except (urllib.error.URLError, ConnectionError, json.JSONDecodeError):
        return None


@pytest.mark.integration
def test_prometheus_builds_probe_urls(tmp_path):
    """Start Prometheus on a copy of the config and read the scrape URLs it builds."""
    prometheus = require_binary("prometheus")
    shutil.copytree(PROMETHEUS_DIR, tmp_path / "prometheus")
    (tmp_path / "rules").mkdir()
    for rule_file in (REPO / "rules").glob("*.yml"):
        shutil.copy(rule_file, tmp_path / "rules")
    (tmp_path / "prometheus" / "targets" / "test-tcp.yml").write_text(
        yaml.safe_dump([{"targets": ["127.0.0.1:9093"], "labels": {"__module": "tcp_connect"}}]),
        encoding="utf-8",
    )
    config = prometheus_config()
    # No alerts for a real Alertmanager on 9093, and hourly scrapes, so the
    # test leaves the other loopback services alone.
    del config["alerting"]
    config["global"]["scrape_interval"] = "1h"
    scrape_job(config, "blackbox")["scrape_interval"] = "1h"
    config_file = tmp_path / "prometheus" / "prometheus.yml"
    config_file.write_text(yaml.safe_dump(config), encoding="utf-8")

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log_file = tmp_path / "prometheus.log"
    with log_file.open("w") as log:
        process = subprocess.Popen(
            [
                prometheus,
                f"--config.file={config_file}",
                f"--web.listen-address=127.0.0.1:{port}",
                f"--storage.tsdb.path={tmp_path / 'data'}",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        expected_count = sum(len(group["targets"]) for group in blackbox_target_groups()) + 1
        deadline = time.monotonic() + 30
        blackbox: list[dict[str, Any]] = []
        rules = None
        while time.monotonic() < deadline and process.poll() is None:
            targets = fetch_json(f"{url}/api/v1/targets?state=active")
            rules = fetch_json(f"{url}/api/v1/rules")
            if targets:
                blackbox = [t for t in targets["data"]["activeTargets"] if t["labels"]["job"] == "blackbox"]
                if len(blackbox) == expected_count and rules:
                    break
            time.sleep(0.2)
        log_text = log_file.read_text(errors="replace")
        assert len(blackbox) == expected_count, log_text
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)

    for target in blackbox:
        scrape = urllib.parse.urlsplit(target["scrapeUrl"])
        query = urllib.parse.parse_qs(scrape.query)
        instance = target["labels"]["instance"]
        assert (scrape.scheme, scrape.netloc, scrape.path) == ("http", EXPORTER, "/probe")
        assert query["target"] == [instance]
        expected_module = "tcp_connect" if instance == "127.0.0.1:9093" else "http_2xx"
        assert query["module"] == [expected_module]
    instances = {target["labels"]["instance"] for target in blackbox}
    assert "http://127.0.0.1:9090/-/healthy" in instances

    # ../rules/*.yml resolved against the config file's folder.
    rule_groups = rules["data"]["groups"] if rules else []
    if list((REPO / "rules").glob("*.yml")):
        assert rule_groups, log_text
        assert all(group["file"].startswith(str(tmp_path / "rules")) for group in rule_groups)


# ---------------------------------------------------------------------------
# grafana/provisioning


def test_grafana_datasource():
    config = load_yaml(DATASOURCES)
    assert config["apiVersion"] == 1
    (datasource,) = config["datasources"]
    assert datasource["uid"] == "prometheus"
    assert datasource["type"] == "prometheus"
    assert datasource["url"] == "http://127.0.0.1:9090"
    assert datasource["isDefault"] is True


def test_grafana_dashboard_provider():
    config = load_yaml(DASHBOARD_PROVIDERS)
    assert config["apiVersion"] == 1
    (provider,) = config["providers"]
    assert provider["type"] == "file"
    assert provider["allowUiUpdates"] is False
    assert provider["options"]["path"] == "/var/lib/grafana/dashboards"


def test_dashboard_provider_path_is_compose_mount():
    provider_path = load_yaml(DASHBOARD_PROVIDERS)["providers"][0]["options"]["path"]
    mounts = bind_mounts(compose()["services"]["grafana"])
    assert mounts[provider_path] == (REPO / "dashboards", True)
    assert list((REPO / "dashboards").glob("*.json")), "dashboards/ has no dashboard JSON for Grafana to load"


# ---------------------------------------------------------------------------
# docker-compose.yml


def test_compose_config_parses():
    docker_compose = require_binary("docker-compose")

    result = subprocess.run(
        [docker_compose, "-f", str(COMPOSE_FILE), "config"], capture_output=True, text=True, timeout=60, cwd=REPO
    )

    assert result.returncode == 0, result.stderr
    assert sorted(yaml.safe_load(result.stdout)["services"]) == ["alertmanager", "exporter", "grafana", "prometheus"]


def test_compose_config_rejects_unknown_key(tmp_path):
    docker_compose = require_binary("docker-compose")
    config = compose()
    config["services"]["prometheus"]["netwrok_mode"] = "host"
    bad = tmp_path / "docker-compose.yml"
    bad.write_text(yaml.safe_dump(config), encoding="utf-8")

    result = subprocess.run(
        [docker_compose, "-f", str(bad), "config"], capture_output=True, text=True, timeout=60, cwd=tmp_path
    )

    assert result.returncode != 0
    assert "netwrok_mode" in result.stderr


def bind_mounts(service: dict[str, Any]) -> dict[str, tuple[Path, bool]]:
    """Map each bind mount's container path to (host path, read-only) for one service."""
    mounts = {}
    for volume in service.get("volumes", []):
        source, target, *options = volume.split(":")
        if source.startswith((".", "/")):
            mounts[target] = ((COMPOSE_FILE.parent / source).resolve(), options == ["ro"])
    return mounts


def host_path(service: dict[str, Any], container_path: str) -> Path:
    """Return the repository path that `container_path` shows inside the container."""
    path = PurePosixPath(container_path)
    for target, (source, _) in bind_mounts(service).items():
        if path == PurePosixPath(target) or PurePosixPath(target) in path.parents:
            return source / path.relative_to(target)
    raise AssertionError(f"{container_path} is under no bind mount of the service")


def flag_value(service: dict[str, Any], flag: str) -> str:
    values = [arg.split("=", 1)[1] for arg in service["command"] if arg.startswith(f"{flag}=")]
    assert len(values) == 1, f"{flag} given {len(values)} times in {service['command']}"
    return values[0]


def test_compose_services_use_host_network():
    for name, service in compose()["services"].items():
        assert service["network_mode"] == "host", name
        assert "ports" not in service, f"{name}: ports do not apply with host networking"


def test_compose_host_paths_exist():
    for name, service in compose()["services"].items():
        for target, (source, _) in bind_mounts(service).items():
            assert source.exists(), f"{name}: {source} (mounted at {target}) does not exist"
            assert source.is_relative_to(REPO), f"{name}: {source} is outside the repository"


@pytest.mark.parametrize(
    ("service", "source"),
    [
        ("prometheus", "prometheus"),
        ("prometheus", "rules"),
        ("alertmanager", "alertmanager"),
        ("grafana", "grafana/provisioning"),
        ("grafana", "dashboards"),
    ],
)
def test_compose_config_mounts_read_only(service, source):
    mounts = bind_mounts(compose()["services"][service]).values()
    assert (REPO / source, True) in mounts


@pytest.mark.parametrize(
    ("service", "repository", "prefix"),
    [
        ("prometheus", "prom/prometheus", "v2."),
        ("alertmanager", "prom/alertmanager", "v0."),
        ("grafana", "grafana/grafana", ""),
    ],
)
def test_compose_images_pinned(service, repository, prefix):
    name, _, tag = compose()["services"][service]["image"].partition(":")
    assert name == repository
    assert re.fullmatch(r"v?\d+\.\d+\.\d+", tag), f"{service} image tag {tag!r} is not a pinned version"
    assert tag.startswith(prefix)
    if service == "alertmanager":
        assert tuple(int(part) for part in tag[1:].split(".")[:2]) >= (0, 25)


def test_compose_prometheus_paths():
    service = compose()["services"]["prometheus"]
    config_path = flag_value(service, "--config.file")
    assert host_path(service, config_path) == PROMETHEUS_CONFIG
    assert flag_value(service, "--web.listen-address") == "127.0.0.1:9090"

    # rule_files and file_sd globs resolve against the config file's folder
    # inside the container, and must land on the mounted rules/ and targets/.
    config_dir = PurePosixPath(config_path).parent
    for pattern in prometheus_config()["rule_files"]:
        folder = _normalize(config_dir / pattern).parent
        assert host_path(service, str(folder)) == REPO / "rules"
    for pattern in scrape_job(prometheus_config(), "blackbox")["file_sd_configs"][0]["files"]:
        folder = _normalize(config_dir / pattern).parent
        assert host_path(service, str(folder)) == PROMETHEUS_DIR / "targets"


def _normalize(path: PurePosixPath) -> PurePosixPath:
    """Collapse '..' parts the way the kernel resolves a path without symlinks."""
    parts: list[str] = []
    for part in path.parts:
        if part == "..":
            parts.pop()
        else:
            parts.append(part)
    return PurePosixPath(*parts)


def test_compose_alertmanager_paths():
    service = compose()["services"]["alertmanager"]
    config_path = flag_value(service, "--config.file")
    assert host_path(service, config_path) == REPO / "alertmanager" / "alertmanager.yml"
    assert flag_value(service, "--web.listen-address") == "127.0.0.1:9093"
    assert flag_value(service, "--cluster.listen-address") == ""

    secret = load_yaml(REPO / "alertmanager" / "alertmanager.yml")["global"]["smtp_auth_password_file"]
    assert host_path(service, secret).parent == REPO / "alertmanager" / "secrets"


def test_compose_exporter():
    service = compose()["services"]["exporter"]
    assert service["build"] == "."
    assert service["command"][0] == "serve"
    assert flag_value(service, "--web.listen-address") == EXPORTER
    assert host_path(service, flag_value(service, "--web.runbooks-dir")).is_dir()


def test_compose_grafana_anonymous_viewer():
    service = compose()["services"]["grafana"]
    environment = service["environment"]
    assert environment["GF_AUTH_ANONYMOUS_ENABLED"] == "true"
    assert environment["GF_AUTH_ANONYMOUS_ORG_ROLE"] == "Viewer"
    assert (environment["GF_SERVER_HTTP_ADDR"], environment["GF_SERVER_HTTP_PORT"]) == ("127.0.0.1", "3000")
    assert host_path(service, "/etc/grafana/provisioning/datasources/prometheus.yml") == DATASOURCES


# ---------------------------------------------------------------------------
# Dockerfile


def dockerfile_instructions() -> list[tuple[str, str]]:
    """Return (INSTRUCTION, arguments) pairs, with continuation lines joined."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text(encoding="utf-8"))
    instructions = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, arguments = line.partition(" ")
            instructions.append((keyword.upper(), arguments.strip()))
    return instructions


def test_dockerfile_instructions():
    instructions = dockerfile_instructions()
    by_keyword: dict[str, list[str]] = {}
    for keyword, arguments in instructions:
        by_keyword.setdefault(keyword, []).append(arguments)

    assert by_keyword["FROM"] == ["python:3.11-slim"]
    assert any(re.search(r"\bpip install \.(\s|$)", run) for run in by_keyword["RUN"])
    assert by_keyword["USER"] == ["nobody"]
    assert by_keyword["EXPOSE"] == ["9115"]
    assert json.loads(by_keyword["ENTRYPOINT"][-1]) == ["slawatch"]
    assert json.loads(by_keyword["CMD"][-1]) == ["serve"]
    # USER comes after the install, so pip runs as root and the exporter does not.
    keywords = [keyword for keyword, _ in instructions]
    assert keywords.index("USER") > max(i for i, k in enumerate(keywords) if k == "RUN")


def test_dockerignore_keeps_secrets_out():
    lines = (REPO / ".dockerignore").read_text(encoding="utf-8").splitlines()
    entries = [line.strip() for line in lines if line.strip() and not line.startswith("#")]
    assert "alertmanager/secrets" in entries
    assert ".git" in entries
    for needed in ("pyproject.toml", "README.md", "exporter"):
        assert needed not in entries
