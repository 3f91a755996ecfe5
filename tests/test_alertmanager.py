"""Tests of alertmanager/: the config, its routing tree and its templates.

The config and routes are checked with amtool. The templates are rendered by
a real Alertmanager that sends to a webhook sink, a Slack-format sink and an
aiosmtpd SMTP server started here, all on 127.0.0.1.
"""

from __future__ import annotations

import email
import email.policy
import json
import re
import shutil
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import REPO, free_port, require_binary

AM_DIR = REPO / "alertmanager"
AM_CONFIG = AM_DIR / "alertmanager.yml"
TEMPLATE_FILE = AM_DIR / "templates" / "slawatch.tmpl"
ROUTE_CASES = yaml.safe_load((AM_DIR / "routes-tests.yml").read_text(encoding="utf-8"))["cases"]

SINK_URL = "http://127.0.0.1:9115/api/v1/alertmanager/webhook"
RECEIVERS = {"default", "oncall", "support-email", "support-chat", "deadmansswitch", "slo-webhook", "support-slack",
             "support-wecom", "support-dingtalk", "support-feishu"}
RELAY_KINDS = {"support-wecom": "wecom", "support-dingtalk": "dingtalk", "support-feishu": "feishu"}
SMTP_USER = "slawatch-alerts@example.org"
SMTP_PASSWORD = "test-password-from-file"
DELIVERY_TIMEOUT = 30.0

pytestmark = pytest.mark.integration


def run_amtool(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    amtool = require_binary("amtool")
    return subprocess.run([amtool, *args], capture_output=True, text=True, timeout=timeout, check=False)


def wait_until(condition: Callable[[], Any], timeout: float, description: str, interval: float = 0.1) -> Any:
    """Poll `condition` until it returns a truthy value, or fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {description}")
        time.sleep(interval)


# ---------------------------------------------------------------------------
# Static checks of the committed files


def load_am_config() -> dict[str, Any]:
    return yaml.safe_load(AM_CONFIG.read_text(encoding="utf-8"))


def test_check_config_passes():
    result = run_amtool("check-config", str(AM_CONFIG))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout
    assert "1 templates" in result.stdout


def test_check_config_rejects_unknown_receiver(tmp_path):
    config = load_am_config()
    config["route"]["routes"][1]["receiver"] = "pager-typo"
    bad = tmp_path / "alertmanager.yml"
    bad.write_text(yaml.safe_dump(config), encoding="utf-8")
    shutil.copytree(AM_DIR / "templates", tmp_path / "templates")

    result = run_amtool("check-config", str(bad))

    assert result.returncode != 0
    assert 'undefined receiver "pager-typo"' in result.stdout + result.stderr


def test_check_config_rejects_broken_template(tmp_path):
    shutil.copy(AM_CONFIG, tmp_path / "alertmanager.yml")
    shutil.copytree(AM_DIR / "templates", tmp_path / "templates")
    (tmp_path / "templates" / "broken.tmpl").write_text('{{ define "broken" }}{{ .Status \n', encoding="utf-8")

    result = run_amtool("check-config", str(tmp_path / "alertmanager.yml"))

    assert result.returncode != 0
    assert "unclosed action" in result.stdout + result.stderr


@pytest.mark.parametrize("case", ROUTE_CASES, ids=[case["name"] for case in ROUTE_CASES])
def test_route_case(case):
    labels = [f"{name}={value}" for name, value in case["labels"].items()]
    expected = ",".join(case["receivers"])

    result = run_amtool(
        "config", "routes", "test", f"--config.file={AM_CONFIG}", f"--verify.receivers={expected}", *labels
    )

    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == expected


def test_route_verify_fails_on_wrong_receivers():
    result = run_amtool(
        "config", "routes", "test", f"--config.file={AM_CONFIG}", "--verify.receivers=oncall", "severity=page"
    )

    assert result.returncode != 0
    assert result.stdout.strip().splitlines()[0] == "oncall,support-email,support-chat"


def test_route_cases_cover_every_receiver():
    covered = {receiver for case in ROUTE_CASES for receiver in case["receivers"]}
    assert covered == RECEIVERS


def test_receiver_names():
    names = [receiver["name"] for receiver in load_am_config()["receivers"]]
    assert sorted(names) == sorted(RECEIVERS)


def test_webhooks_point_at_local_sink():
    for receiver in load_am_config()["receivers"]:
        for webhook in receiver.get("webhook_configs", []):
            url = urllib.parse.urlsplit(webhook["url"])
            if receiver["name"] in RELAY_KINDS:
                kind = RELAY_KINDS[receiver["name"]]
                assert webhook["url"] == f"http://127.0.0.1:9115/api/v1/relay/{kind}/{receiver['name']}"
                continue
            assert f"{url.scheme}://{url.netloc}{url.path}" == SINK_URL, receiver["name"]
            assert urllib.parse.parse_qs(url.query) == {"receiver": [receiver["name"]]}


def test_route_grouping():
    route = load_am_config()["route"]
    assert route["receiver"] == "default"
    assert route["group_by"] == ["alertname", "slo", "service", "severity"]


def test_watchdog_route_repeats_every_minute():
    watchdog = load_am_config()["route"]["routes"][0]
    assert watchdog["matchers"] == ['alertname="Watchdog"']
    assert watchdog["receiver"] == "deadmansswitch"
    assert watchdog["repeat_interval"] == "1m"


def test_page_inhibits_ticket():
    rules = load_am_config()["inhibit_rules"]
    assert rules == [
        {
            "source_matchers": ['severity="page"', 'slo=~".+"', 'service=~".+"'],
            "target_matchers": ['severity="ticket"', 'slo=~".+"', 'service=~".+"'],
            "equal": ["alertname", "slo", "service"],
        }
    ]


def test_email_settings():
    config = load_am_config()
    global_section = config["global"]
    assert global_section["smtp_smarthost"] == "127.0.0.1:2525"
    assert global_section["smtp_require_tls"] is False
    assert global_section["smtp_from"].endswith("@example.org")
    assert global_section["smtp_auth_password_file"].startswith("/etc/slawatch/alertmanager/secrets/")
    assert "smtp_auth_password" not in global_section
    (email_config,) = next(r for r in config["receivers"] if r["name"] == "support-email")["email_configs"]
    assert email_config["to"].endswith("@example.org")


@pytest.mark.parametrize(
    ("path", "ignored"),
    [("alertmanager/secrets/smtp-password", True), ("alertmanager/secrets/README.md", False)],
)
def test_secrets_folder_is_git_ignored(path, ignored):
    git = require_binary("git")
    # check-ignore exits 0 for an ignored path and 1 for one that is not.
    result = subprocess.run(
        [git, "check-ignore", "--quiet", "--no-index", path], cwd=REPO, capture_output=True, timeout=30, check=False
    )
    assert result.returncode == (0 if ignored else 1), result.stderr


def template_names() -> set[str]:
    text = TEMPLATE_FILE.read_text(encoding="utf-8")
    return set(re.findall(r'{{-?\s*define\s+"([^"]+)"', text))


def test_templates_exist_in_both_languages():
    names = template_names()
    english = {name.removeprefix("slawatch.en.") for name in names if name.startswith("slawatch.en.")}
    chinese = {name.removeprefix("slawatch.zh.") for name in names if name.startswith("slawatch.zh.")}
    assert {"email.subject", "email.html", "text", "chat.title"} <= english
    assert english == chinese
    assert names == {f"slawatch.en.{n}" for n in english} | {f"slawatch.zh.{n}" for n in chinese}


def notification_data(status: str, labels: dict[str, str]) -> dict[str, Any]:
    """Return template data in Alertmanager's template.Data layout for one alert."""
    return {
        "receiver": "support-email",
        "status": status,
        "alerts": [
            {
                "status": status,
                "labels": labels,
                "annotations": {"summary": "Budget burn"},
                "startsAt": "2024-05-01T10:00:00Z",
                "endsAt": "2024-05-01T11:30:00Z" if status == "resolved" else "0001-01-01T00:00:00Z",
                "generatorURL": "",
                "fingerprint": "0123456789abcdef",
            }
        ],
        "groupLabels": {},
        "commonLabels": labels,
        "commonAnnotations": {},
        "externalURL": "http://127.0.0.1:9093",
    }


STOREFRONT = {
    "alertname": "SLOErrorBudgetBurn",
    "severity": "ticket",
    "slo": "web-availability",
    "service": "storefront",
}
RENDER_CASES = [
    ("slawatch.en.email.subject", "resolved", STOREFRONT,
     "[RESOLVED] [TICKET] SLOErrorBudgetBurn: service storefront, SLO web-availability"),
    ("slawatch.zh.email.subject", "resolved", STOREFRONT,
     "[已恢复] [工单] SLOErrorBudgetBurn：服务 storefront，SLO web-availability"),
    ("slawatch.en.email.subject", "firing", {"alertname": "Watchdog"},
     "[FIRING:1] [-] Watchdog: service -, SLO -"),
    ("slawatch.zh.email.subject", "firing", {"alertname": "Watchdog", "severity": "none"},
     "[告警中:1] [none] Watchdog：服务 -，SLO -"),
    ("slawatch.en.chat.title", "firing", STOREFRONT,
     "[FIRING:1] [TICKET] SLOErrorBudgetBurn: service storefront, SLO web-availability"),
]


@pytest.mark.parametrize(("template", "status", "labels", "expected"), RENDER_CASES)
def test_template_render(tmp_path, template, status, labels, expected):
    data_file = tmp_path / "data.json"
    data_file.write_text(json.dumps(notification_data(status, labels)), encoding="utf-8")

    result = run_amtool(
        "template", "render", f"--template.glob={AM_DIR / 'templates' / '*.tmpl'}",
        f"--template.data={data_file}", f'--template.text={{{{ template "{template}" . }}}}',
    )

    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == expected


@pytest.mark.parametrize(
    ("locale", "expected_lines"),
    [
        ("en", ["[RESOLVED] Budget burn", "Severity: ticket", "Resolved: 2024-05-01 11:30:00 UTC"]),
        ("zh", ["[已恢复] Budget burn", "级别：工单（ticket）", "恢复时间：2024-05-01 11:30:00 UTC"]),
    ],
)
def test_text_render_resolved(tmp_path, locale, expected_lines):
    data_file = tmp_path / "data.json"
    data_file.write_text(json.dumps(notification_data("resolved", STOREFRONT)), encoding="utf-8")

    result = run_amtool(
        "template", "render", f"--template.glob={AM_DIR / 'templates' / '*.tmpl'}",
        f"--template.data={data_file}", f'--template.text={{{{ template "slawatch.{locale}.text" . }}}}',
    )

    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    for line in expected_lines:
        assert line in lines
    # An empty generatorURL leaves out the source line.
    assert not any(line.startswith(("Source:", "来源：")) for line in lines)


def test_receivers_use_one_language():
    text = AM_CONFIG.read_text(encoding="utf-8")
    active = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))
    used = set(re.findall(r'template "([^"]+)"', active))
    assert used == {"slawatch.en.email.subject", "slawatch.en.email.html", "slawatch.en.text",
                    "slawatch.en.chat.title"}
    assert used <= template_names()


# ---------------------------------------------------------------------------
# Local sinks that a real Alertmanager sends to


@dataclass
class Delivery:
    path: str
    receiver: str
    body: dict[str, Any]


@dataclass
class HTTPSink:
    """A webhook and Slack-format sink on 127.0.0.1 that records every POST."""

    deliveries: list[Delivery] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> None:
        sink = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                body = json.loads(self.rfile.read(length) or b"{}")
                url = urllib.parse.urlsplit(self.path)
                receiver = urllib.parse.parse_qs(url.query).get("receiver", [""])[0]
                with sink.lock:
                    sink.deliveries.append(Delivery(url.path, receiver, body))
                self.send_response(200)
                self.send_header("Content-Type", "text/plain")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def find(self, path: str, receiver: str, **labels: str) -> list[Delivery]:
        """Return deliveries to `path` and `receiver` whose payload has an alert with `labels`."""
        with self.lock:
            found = []
            for delivery in self.deliveries:
                if delivery.path != path or delivery.receiver != receiver:
                    continue
                alerts = delivery.body.get("alerts", [])
                if not labels or any(labels.items() <= alert["labels"].items() for alert in alerts):
                    found.append(delivery)
            return found

    def find_slack(self, receiver: str, text: str) -> list[Delivery]:
        with self.lock:
            return [
                delivery
                for delivery in self.deliveries
                if delivery.path == "/slack"
                and delivery.receiver == receiver
                and text in json.dumps(delivery.body, ensure_ascii=False)
            ]


@dataclass
class SMTPSink:
    """An aiosmtpd server on 127.0.0.1 that requires AUTH and records each message."""

    port: int = 0
    messages: list[email.message.EmailMessage] = field(default_factory=list)
    logins: list[tuple[str, str]] = field(default_factory=list)

    def start(self) -> None:
        from aiosmtpd.controller import Controller
        from aiosmtpd.smtp import AuthResult

        sink = self

        class Handler:
            async def handle_DATA(self, server, session, envelope):
                message = email.message_from_bytes(envelope.original_content, policy=email.policy.default)
                sink.messages.append(message)
                return "250 OK"

        def authenticate(server, session, envelope, mechanism, auth_data):
            login = auth_data.login.decode()
            password = auth_data.password.decode()
            sink.logins.append((login, password))
            return AuthResult(success=(login, password) == (SMTP_USER, SMTP_PASSWORD))

        self.port = free_port()
        self.controller = Controller(
            Handler(),
            hostname="127.0.0.1",
            port=self.port,
            authenticator=authenticate,
            auth_required=True,
            auth_require_tls=False,
            # Alertmanager's LOGIN client expects the challenge "Username:",
            # but aiosmtpd sends "User Name", so offer PLAIN only.
            auth_exclude_mechanism=["LOGIN"],
            ready_timeout=10,
        )
        self.controller.start()

    def stop(self) -> None:
        self.controller.stop()

    def find(self, *texts: str) -> list[email.message.EmailMessage]:
        """Return the messages whose subject contains every one of `texts`."""
        return [m for m in list(self.messages) if all(text in str(m["Subject"]) for text in texts)]


# ---------------------------------------------------------------------------
# A real Alertmanager on a free loopback port


def use_local_sinks(config: dict[str, Any], http: HTTPSink, smtp: SMTPSink, secret_file: Path, locale: str) -> None:
    """Point a copy of the config at the test sinks and shorten its timers."""
    config["global"]["smtp_smarthost"] = f"127.0.0.1:{smtp.port}"
    config["global"]["smtp_auth_password_file"] = str(secret_file)

    def shorten(route: dict[str, Any]) -> None:
        route["group_wait"] = "1s"
        route["group_interval"] = "1s"
        for child in route.get("routes", []):
            shorten(child)

    shorten(config["route"])

    # Business hours around the clock, so that ticket emails go out whenever
    # the test runs. tests/test_alerting_e2e.py checks an interval that
    # excludes the current time.
    (interval,) = config["time_intervals"]
    interval["time_intervals"] = [{"times": [{"start_time": "00:00", "end_time": "24:00"}],
                                   "location": "Asia/Shanghai"}]

    for receiver in config["receivers"]:
        for webhook in receiver.get("webhook_configs", []):
            webhook["url"] = webhook["url"].replace("http://127.0.0.1:9115", http.base_url)
        for slack in receiver.get("slack_configs", []):
            del slack["api_url_file"]
            slack["api_url"] = f"{http.base_url}/slack?receiver={receiver['name']}"


@dataclass
class AlertmanagerRun:
    url: str
    process: subprocess.Popen
    log_file: Path
    http: HTTPSink
    smtp: SMTPSink
    locale: str

    def log_problems(self) -> str:
        lines = self.log_file.read_text(errors="replace").splitlines()
        return "\n".join(line for line in lines if "level=warn" in line or "level=error" in line)

    def post_alerts(self, alerts: list[dict[str, Any]]) -> None:
        request = urllib.request.Request(
            f"{self.url}/api/v2/alerts",
            data=json.dumps(alerts).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            assert response.status == 200

    def get_alerts(self, **labels: str) -> list[dict[str, Any]]:
        query = urllib.parse.urlencode([("filter", f'{k}="{v}"') for k, v in labels.items()])
        with urllib.request.urlopen(f"{self.url}/api/v2/alerts?{query}", timeout=10) as response:
            return json.load(response)

    def wait(self, condition: Callable[[], Any], description: str) -> Any:
        try:
            return wait_until(condition, DELIVERY_TIMEOUT, description)
        except AssertionError as error:
            received = [f"{d.path}?receiver={d.receiver}" for d in self.http.deliveries]
            subjects = [str(m["Subject"]) for m in self.smtp.messages]
            raise AssertionError(
                f"{error}\nHTTP deliveries: {received}\nEmail subjects: {subjects}\n"
                f"Alertmanager warnings and errors:\n{self.log_problems()}"
            ) from None


def is_ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/-/ready", timeout=2) as response:
            return response.status == 200
    except (urllib.error.URLError, ConnectionError):
        return False


@pytest.fixture(scope="module", params=["en", "zh"])
def alertmanager(request, tmp_path_factory) -> Iterator[AlertmanagerRun]:
    binary = require_binary("prometheus-alertmanager", "alertmanager")
    locale = request.param
    workdir = tmp_path_factory.mktemp(f"alertmanager-{locale}")

    http = HTTPSink()
    http.start()
    request.addfinalizer(http.stop)
    smtp = SMTPSink()
    smtp.start()
    request.addfinalizer(smtp.stop)

    secret_file = workdir / "secrets" / "smtp-password"
    secret_file.parent.mkdir()
    # Alertmanager 0.25 sends the file's bytes as they are, so a trailing
    # newline would become part of the password.
    secret_file.write_text(SMTP_PASSWORD, encoding="utf-8")

    # Switch the language as docs/alerting.md describes.
    text = AM_CONFIG.read_text(encoding="utf-8").replace("slawatch.en.", f"slawatch.{locale}.")
    config = yaml.safe_load(text)
    use_local_sinks(config, http, smtp, secret_file, locale)
    config_file = workdir / "alertmanager.yml"
    config_file.write_text(yaml.safe_dump(config, allow_unicode=True), encoding="utf-8")
    shutil.copytree(AM_DIR / "templates", workdir / "templates")

    check = run_amtool("check-config", str(config_file))
    assert check.returncode == 0, check.stdout + check.stderr

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log_file = workdir / "alertmanager.log"
    with log_file.open("w") as log:
        process = subprocess.Popen(
            [
                binary,
                f"--config.file={config_file}",
                f"--web.listen-address=127.0.0.1:{port}",
                "--cluster.listen-address=",
                f"--storage.path={workdir / 'data'}",
                f"--web.external-url={url}",
                "--log.level=debug",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=workdir,
        )
    run = AlertmanagerRun(url, process, log_file, http, smtp, locale)

    def stop() -> None:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)

    request.addfinalizer(stop)
    run.wait(lambda: process.poll() is None and is_ready(url), "Alertmanager to become ready")
    run.post_alerts(TEST_ALERTS)
    yield run


def make_alert(severity: str, alertname: str, slo: str, service: str, summary: str) -> dict[str, Any]:
    return {
        "labels": {"alertname": alertname, "severity": severity, "slo": slo, "service": service, "team": "sre"},
        "annotations": {
            "summary": summary,
            "description": f"The {slo} SLO of {service} is at risk.",
            "runbook_url": f"http://127.0.0.1:9115/runbooks/{alertname.lower()}",
            "dashboard_url": f"http://127.0.0.1:3000/d/slawatch-slo?var-slo={slo}",
        },
        "generatorURL": "http://127.0.0.1:9090/graph",
    }


# Service and SLO names are not substrings of each other, so a subject that
# drops one of them fails the checks.
PAGE = make_alert("page", "SLOErrorBudgetBurn", "web-availability", "storefront", "storefront burns budget fast")
TICKET = make_alert("ticket", "SLOErrorBudgetExhausted", "first-response", "helpdesk", "helpdesk has no budget left")
TICKET["labels"]["chat"] = "slack"
WECOM_PAGE = make_alert("page", "SLIDataAbsent", "cdn-availability", "cdn", "cdn has no data")
WECOM_PAGE["labels"]["chat"] = "wecom"
# A page and a ticket for the same SLO and service: the page mutes the ticket.
INHIBITING_PAGE = make_alert("page", "SLOErrorBudgetBurn", "api-availability", "api", "api burns fast")
INHIBITED_TICKET = make_alert("ticket", "SLOErrorBudgetBurn", "api-availability", "api", "api burns slowly")
WATCHDOG = {"labels": {"alertname": "Watchdog", "severity": "none"}, "annotations": {"summary": "Alerting works"}}
UNROUTED = {"labels": {"alertname": "SlawatchTestUnrouted"}, "annotations": {"summary": "No route matches"}}
TEST_ALERTS = [PAGE, TICKET, INHIBITING_PAGE, INHIBITED_TICKET, WATCHDOG, UNROUTED, WECOM_PAGE]

# The severity word that each language's subject uses.
SEVERITY_TEXT = {"en": {"page": "[PAGE]", "ticket": "[TICKET]"}, "zh": {"page": "[紧急]", "ticket": "[工单]"}}
TEXT_LABELS = {
    "en": {"runbook": "Runbook: ", "dashboard": "Dashboard: ", "service": "Service: "},
    "zh": {"runbook": "处理手册：", "dashboard": "仪表盘：", "service": "服务："},
}
TEXT_SEVERITY = {
    "en": {"page": "Severity: page", "ticket": "Severity: ticket"},
    "zh": {"page": "级别：紧急（page）", "ticket": "级别：工单（ticket）"},
}
WEBHOOK = "/api/v1/alertmanager/webhook"


@pytest.mark.parametrize(
    ("alert", "receiver"),
    [(PAGE, "oncall"), (PAGE, "slo-webhook"), (PAGE, "support-chat"), (TICKET, "slo-webhook"),
     (WATCHDOG, "deadmansswitch"), (UNROUTED, "default")],
    ids=["page-oncall", "page-slo-webhook", "page-support-chat", "ticket-slo-webhook", "watchdog-deadmansswitch",
         "unrouted-default"],
)
def test_webhook_delivery(alertmanager, alert, receiver):
    labels = alert["labels"]

    (delivery, *_) = alertmanager.wait(
        lambda: alertmanager.http.find(WEBHOOK, receiver, **labels), f"{receiver} webhook for {labels}"
    )

    assert delivery.body["receiver"] == receiver
    assert delivery.body["status"] == "firing"
    (sent,) = delivery.body["alerts"]
    assert sent["labels"] == labels
    assert sent["annotations"] == alert["annotations"]


@pytest.mark.parametrize("alert", [PAGE, TICKET], ids=["page", "ticket"])
def test_email_rendering(alertmanager, alert):
    labels = alert["labels"]
    severity = SEVERITY_TEXT[alertmanager.locale][labels["severity"]]

    (message, *_) = alertmanager.wait(
        lambda: alertmanager.smtp.find(severity, labels["service"], labels["slo"], labels["alertname"]),
        f"email with subject naming {severity}, {labels['service']}, {labels['slo']}",
    )

    assert message["To"] == "support@example.org"
    assert message["From"] == "slawatch-alerts@example.org"
    html = message.get_body(preferencelist=("html",)).get_content()
    plain = message.get_body(preferencelist=("plain",)).get_content()
    for part in (html, plain):
        assert alert["annotations"]["summary"] in part
        assert alert["annotations"]["description"] in part
    assert f'href="{alert["annotations"]["runbook_url"]}"' in html
    assert 'href="http://127.0.0.1:3000/d/slawatch-slo?var-slo=' + labels["slo"] + '"' in html
    text_labels = TEXT_LABELS[alertmanager.locale]
    assert text_labels["runbook"] + alert["annotations"]["runbook_url"] in plain
    assert text_labels["dashboard"] + alert["annotations"]["dashboard_url"] in plain
    assert text_labels["service"] + labels["service"] in plain
    assert TEXT_SEVERITY[alertmanager.locale][labels["severity"]] in plain


def test_email_uses_password_file(alertmanager):
    alertmanager.wait(lambda: alertmanager.smtp.logins, "any SMTP login")
    assert alertmanager.smtp.logins
    assert set(alertmanager.smtp.logins) == {(SMTP_USER, SMTP_PASSWORD)}, alertmanager.smtp.logins


def test_chat_title_rendering(alertmanager):
    labels = TICKET["labels"]
    severity = SEVERITY_TEXT[alertmanager.locale]["ticket"]

    (delivery, *_) = alertmanager.wait(
        lambda: alertmanager.http.find_slack("support-slack", labels["slo"]), "Slack-format chat message"
    )

    (attachment,) = delivery.body["attachments"]
    for text in (severity, labels["service"], labels["slo"]):
        assert text in attachment["title"]
    assert TICKET["annotations"]["summary"] in attachment["text"]
    assert TEXT_LABELS[alertmanager.locale]["runbook"] + TICKET["annotations"]["runbook_url"] in attachment["text"]


def test_page_mutes_matching_ticket(alertmanager):
    page_labels = INHIBITING_PAGE["labels"]
    ticket_labels = INHIBITED_TICKET["labels"]
    alertmanager.wait(lambda: alertmanager.http.find(WEBHOOK, "oncall", **page_labels), "page to reach on-call")

    (ticket,) = alertmanager.get_alerts(service="api", severity="ticket")
    assert ticket["status"]["state"] == "suppressed"
    assert len(ticket["status"]["inhibitedBy"]) == 1

    # The unmuted ticket for another service has gone out by now, so a muted
    # one would have too.
    alertmanager.wait(lambda: alertmanager.http.find(WEBHOOK, "slo-webhook", **TICKET["labels"]), "other ticket")
    time.sleep(2)
    assert alertmanager.http.find(WEBHOOK, "slo-webhook", **ticket_labels) == []
    assert alertmanager.http.find(WEBHOOK, "support-chat", **ticket_labels) == []
    severity = SEVERITY_TEXT[alertmanager.locale]["ticket"]
    assert alertmanager.smtp.find(severity, ticket_labels["slo"]) == []


def test_chat_label_routes_to_relay(alertmanager):
    labels = WECOM_PAGE["labels"]

    (delivery, *_) = alertmanager.wait(
        lambda: alertmanager.http.find("/api/v1/relay/wecom/support-wecom", "", **labels), "relay webhook for wecom"
    )

    assert delivery.body["receiver"] == "support-wecom"
    assert alertmanager.http.find(WEBHOOK, "support-chat", **labels) == []
