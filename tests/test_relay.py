"""Tests of the chat relay against local DingTalk, Feishu and WeCom stand-ins."""

from __future__ import annotations

import asyncio
import json
import logging

import pytest
from prometheus_client import CollectorRegistry

from slawatch.config import ConfigError, parse_config
from slawatch.relay.limiter import RateLimiter
from slawatch.relay.message import truncate_utf8
from slawatch.web.app import Exporter, create_app

from conftest import minimal_config
from robots import SECRET, TOKEN, WECOM_KEY, FakeRobots, write_robot_secrets

KINDS = ["dingtalk", "feishu", "wecom"]


def make_alert(status: str = "firing", service: str = "storefront", slo: str = "web-availability",
               severity: str = "page", description: str = "The error budget burns 20x too fast.") -> dict:
    return {
        "status": status,
        "labels": {"alertname": "SLOErrorBudgetBurn", "severity": severity, "slo": slo, "service": service,
                   "team": "sre"},
        "annotations": {"summary": f"{service} burns budget", "description": description,
                        "runbook_url": "http://127.0.0.1:9115/runbooks/SLOErrorBudgetBurn.md",
                        "dashboard_url": "http://127.0.0.1:3000/d/slawatch-slo"},
        "startsAt": "2024-05-01T10:00:00Z",
        "endsAt": "2024-05-01T11:30:00Z" if status == "resolved" else "0001-01-01T00:00:00Z",
        "generatorURL": "http://127.0.0.1:9090/graph",
        "fingerprint": "0123456789abcdef",
    }


def make_payload(alerts: list[dict], status: str = "firing") -> dict:
    common = dict(alerts[0]["labels"]) if alerts else {}
    for alert in alerts[1:]:
        common = {k: v for k, v in common.items() if alert["labels"].get(k) == v}
    return {"version": "4", "groupKey": "{}:{}", "truncatedAlerts": 0, "status": status, "receiver": "chat",
            "groupLabels": {}, "commonLabels": common, "commonAnnotations": {},
            "externalURL": "http://127.0.0.1:9093", "alerts": alerts}


@pytest.fixture
def robots():
    return FakeRobots()


@pytest.fixture
async def robot_server(aiohttp_server, robots):
    # No access log: the stand-in logs what the vendor would, URL keys included.
    return await aiohttp_server(robots.app(), host="127.0.0.1", access_log=None)


async def start_relay(aiohttp_client, tmp_path, robot_server, locale="en", secret=SECRET, **relay):
    robots_config = write_robot_secrets(tmp_path / "secrets", str(robot_server.make_url("")).rstrip("/"), secret)
    data = minimal_config(tmp_path, relay={"robots": robots_config, **relay})
    data["global"]["locale"] = locale
    exporter = Exporter(parse_config(data), registry=CollectorRegistry())
    client = await aiohttp_client(create_app(exporter))
    return client, exporter


def metric(exporter: Exporter, name: str, **labels) -> float:
    value = exporter.registry.get_sample_value(name, labels)
    return value or 0.0


def assert_no_secret_logged(caplog) -> None:
    text = "\n".join(record.getMessage() for record in caplog.records)
    for secret in (TOKEN, SECRET, WECOM_KEY):
        assert secret not in text


def message_text(kind: str, body: dict) -> str:
    if kind == "dingtalk":
        return body["markdown"]["title"] + "\n" + body["markdown"]["text"]
    if kind == "wecom":
        return body["markdown"]["content"]
    (post,) = body["content"]["post"].values()
    return post["title"] + "\n" + "\n".join(item["text"] for line in post["content"] for item in line)


@pytest.mark.parametrize("kind", KINDS)
async def test_relay_delivers_signed_message(aiohttp_client, tmp_path, robot_server, robots, kind, caplog):
    caplog.set_level(logging.INFO)
    client, exporter = await start_relay(aiohttp_client, tmp_path, robot_server)

    response = await client.post(f"/api/v1/relay/{kind}/support-{kind}", json=make_payload([make_alert()]))

    assert response.status == 200, await response.text()
    assert robots.rejected == []
    (received,) = robots.of_kind(kind)
    text = message_text(kind, received.body)
    title = text.splitlines()[0]
    for word in ("[FIRING:1]", "[PAGE]", "service storefront", "SLO web-availability"):
        assert word in title
    assert "storefront burns budget" in text
    assert "http://127.0.0.1:9115/runbooks/SLOErrorBudgetBurn.md" in text
    assert metric(exporter, "slawatch_relay_messages_total", robot=f"support-{kind}", kind=kind, outcome="sent") == 1
    assert_no_secret_logged(caplog)


@pytest.mark.parametrize("kind", ["dingtalk", "feishu"])
async def test_relay_wrong_secret_is_rejected(aiohttp_client, tmp_path, robot_server, robots, kind, caplog):
    client, exporter = await start_relay(aiohttp_client, tmp_path, robot_server, secret="SECwrong")

    response = await client.post(f"/api/v1/relay/{kind}/support-{kind}", json=make_payload([make_alert()]))

    # A bad signature fails the same way on every retry, so Alertmanager gets a 4xx.
    assert response.status == 422
    assert "310000" in await response.text() or "19021" in await response.text()
    assert robots.rejected == [(kind, "sign")]
    assert robots.messages == []
    assert metric(exporter, "slawatch_relay_messages_total", robot=f"support-{kind}", kind=kind,
                  outcome="rejected") == 1
    assert_no_secret_logged(caplog)


async def test_relay_wrong_wecom_key_is_rejected(aiohttp_client, tmp_path, robot_server, robots, caplog):
    client, _ = await start_relay(aiohttp_client, tmp_path, robot_server)
    (tmp_path / "secrets" / "wecom-key").write_text("another-key\n", encoding="utf-8")

    response = await client.post("/api/v1/relay/wecom/support-wecom", json=make_payload([make_alert()]))

    assert response.status == 422
    assert "93000" in await response.text()
    assert robots.rejected == [("wecom", "key")]
    assert "another-key" not in caplog.text


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("mode", ["http500", "hang", "ratelimit"])
async def test_relay_retryable_failures_return_5xx(aiohttp_client, tmp_path, robot_server, robots, kind, mode,
                                                   caplog):
    robots.mode = mode
    client, exporter = await start_relay(aiohttp_client, tmp_path, robot_server, timeout="500ms")

    response = await client.post(f"/api/v1/relay/{kind}/support-{kind}", json=make_payload([make_alert()]))

    assert response.status == 502, await response.text()
    assert metric(exporter, "slawatch_relay_messages_total", robot=f"support-{kind}", kind=kind,
                  outcome="retryable_error") == 1
    assert_no_secret_logged(caplog)


@pytest.mark.parametrize("kind", KINDS)
async def test_relay_rate_limit_never_bursts(aiohttp_client, tmp_path, robot_server, robots, kind):
    client, exporter = await start_relay(aiohttp_client, tmp_path, robot_server, max_messages_per_minute=3,
                                         queue_wait="0s")
    path = f"/api/v1/relay/{kind}/support-{kind}"

    statuses = []
    for index in range(5):
        response = await client.post(path, json=make_payload([make_alert(service=f"svc{index}")]))
        statuses.append(response.status)
        if response.status == 503:
            retry_after = int(response.headers["Retry-After"])
            assert 1 <= retry_after <= 60

    assert statuses == [200, 200, 200, 503, 503]
    assert len(robots.of_kind(kind)) == 3
    assert metric(exporter, "slawatch_relay_messages_total", robot=f"support-{kind}", kind=kind,
                  outcome="rate_limited") == 2


async def test_relay_limits_are_per_robot(aiohttp_client, tmp_path, robot_server, robots):
    client, _ = await start_relay(aiohttp_client, tmp_path, robot_server, max_messages_per_minute=1, queue_wait="0s")
    payload = make_payload([make_alert()])

    first = await client.post("/api/v1/relay/dingtalk/support-dingtalk", json=payload)
    other = await client.post("/api/v1/relay/wecom/support-wecom", json=payload)
    again = await client.post("/api/v1/relay/dingtalk/support-dingtalk", json=payload)

    assert (first.status, other.status, again.status) == (200, 200, 503)


LIMITS = {"dingtalk": 20000, "feishu": 20000, "wecom": 4096}


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("locale", ["en", "zh-CN"])
async def test_relay_truncates_to_size_limit(aiohttp_client, tmp_path, robot_server, robots, kind, locale):
    client, exporter = await start_relay(aiohttp_client, tmp_path, robot_server, locale=locale)
    description = "错误预算消耗过快。" * 100
    alerts = [make_alert(service=f"service-{index:03d}", description=description) for index in range(80)]

    response = await client.post(f"/api/v1/relay/{kind}/support-{kind}", json=make_payload(alerts))

    assert response.status == 200, await response.text()
    assert robots.rejected == []
    (received,) = robots.of_kind(kind)
    if kind == "wecom":
        assert len(received.body["markdown"]["content"].encode("utf-8")) <= LIMITS[kind]
    else:
        assert received.size <= LIMITS[kind]
    text = message_text(kind, received.body)
    assert ("more alert(s)" if locale == "en" else "条告警未列出") in text
    assert "service-000" in text
    assert metric(exporter, "slawatch_relay_truncated_messages_total", robot=f"support-{kind}", kind=kind) == 1


async def test_relay_chinese_title(aiohttp_client, tmp_path, robot_server, robots):
    client, _ = await start_relay(aiohttp_client, tmp_path, robot_server, locale="zh-CN")
    payload = make_payload([make_alert(status="resolved", severity="ticket")], status="resolved")

    response = await client.post("/api/v1/relay/wecom/support-wecom", json=payload)

    assert response.status == 200
    content = robots.of_kind("wecom")[0].body["markdown"]["content"]
    assert content.splitlines()[0] == "**[已恢复] [工单] SLOErrorBudgetBurn：服务 storefront，SLO web-availability**"
    assert "恢复时间：2024-05-01 11:30:00 UTC" in content


async def test_feishu_post_language_follows_locale(aiohttp_client, tmp_path, robot_server, robots):
    client, _ = await start_relay(aiohttp_client, tmp_path, robot_server, locale="zh-CN")

    await client.post("/api/v1/relay/feishu/support-feishu", json=make_payload([make_alert()]))

    (received,) = robots.of_kind("feishu")
    assert list(received.body["content"]["post"]) == ["zh_cn"]
    assert received.body["msg_type"] == "post"


@pytest.mark.parametrize(
    ("path", "body", "status", "text"),
    [
        ("/api/v1/relay/slack/support-dingtalk", {"alerts": []}, 404, "unknown chat kind"),
        ("/api/v1/relay/dingtalk/nobody", {"alerts": []}, 404, "unknown robot 'nobody'"),
        ("/api/v1/relay/feishu/support-dingtalk", {"alerts": []}, 404, "/api/v1/relay/dingtalk/support-dingtalk"),
        ("/api/v1/relay/dingtalk/support-dingtalk", "not json", 400, "invalid JSON"),
        ("/api/v1/relay/dingtalk/support-dingtalk", {"status": "firing"}, 400, "missing field alerts"),
    ],
)
async def test_relay_bad_requests(aiohttp_client, tmp_path, robot_server, robots, path, body, status, text):
    client, _ = await start_relay(aiohttp_client, tmp_path, robot_server)

    if isinstance(body, str):
        response = await client.post(path, data=body, headers={"Content-Type": "application/json"})
    else:
        response = await client.post(path, json=body)

    assert response.status == status
    assert text in await response.text()
    assert robots.messages == []


async def test_relay_unreadable_secret_is_retryable(aiohttp_client, tmp_path, robot_server, robots, caplog):
    client, _ = await start_relay(aiohttp_client, tmp_path, robot_server)
    (tmp_path / "secrets" / "signing-secret").unlink()

    response = await client.post("/api/v1/relay/dingtalk/support-dingtalk", json=make_payload([make_alert()]))

    assert response.status == 500
    assert "Error reading relay robot secrets robot=support-dingtalk" in caplog.text
    assert robots.messages == []


# ---------------------------------------------------------------------------
# The rate limiter with a fake clock


class FakeClock:
    def __init__(self):
        self.now = 1000.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


async def test_limiter_queues_until_slot_frees():
    clock = FakeClock()
    limiter = RateLimiter(2, clock=clock, sleep=clock.sleep)

    assert await limiter.acquire(0)
    clock.now += 10
    assert await limiter.acquire(0)
    # The first send leaves the window at 1060, 50 s from now.
    assert not await limiter.acquire(49)
    assert await limiter.acquire(50)

    assert clock.slept == [50]
    assert clock.now == 1060


async def test_limiter_never_exceeds_limit_in_any_window():
    clock = FakeClock()
    limiter = RateLimiter(20, clock=clock, sleep=clock.sleep)
    sent = []

    for _ in range(100):
        assert await limiter.acquire(60)
        sent.append(clock.now)
        clock.now += 0.5

    for index, start in enumerate(sent):
        in_window = [t for t in sent[index:] if t < start + 60]
        assert len(in_window) <= 20


async def test_limiter_serves_concurrent_callers_in_turn():
    clock = FakeClock()
    limiter = RateLimiter(1, clock=clock, sleep=clock.sleep)

    results = await asyncio.gather(*(limiter.acquire(0) for _ in range(3)))

    assert results == [True, False, False]


@pytest.mark.parametrize(
    ("text", "limit", "expected"),
    [("abc", 3, "abc"), ("abcdef", 5, "ab…"), ("错误预算", 9, "错误…"), ("错误预算", 8, "错…")],
)
def test_truncate_utf8(text, limit, expected):
    assert truncate_utf8(text, limit) == expected
    assert len(truncate_utf8(text, limit).encode()) <= limit


# ---------------------------------------------------------------------------
# The relay section of the config


@pytest.mark.parametrize(
    ("robot", "problem"),
    [
        ({"kind": "wecom"}, "relay.robots.r: a wecom robot needs key_file"),
        ({"kind": "dingtalk"}, "relay.robots.r: a dingtalk robot needs url_file"),
        ({"kind": "feishu", "url_file": "{dir}/url", "key_file": "{dir}/url"}, "not key_file: remove it"),
        ({"kind": "wecom", "key_file": "{dir}/url", "secret_file": "{dir}/url"}, "not url_file or secret_file"),
        ({"kind": "wecom", "key_file": "{dir}/url", "url": "http://127.0.0.1/send?key=x"}, "without a query"),
        ({"kind": "teams", "url_file": "{dir}/url"}, "relay.robots.r.kind"),
        ({"kind": "dingtalk", "url_file": "{dir}/missing"}, "relay.robots.r.url_file: cannot read"),
        ({"kind": "dingtalk", "url_file": "{dir}/empty"}, "relay.robots.r.url_file:"),
    ],
)
def test_relay_config_errors(tmp_path, robot, problem):
    (tmp_path / "url").write_text("http://127.0.0.1:1/robot/send?access_token=x\n", encoding="utf-8")
    (tmp_path / "empty").write_text("\n", encoding="utf-8")
    robot = {key: value.replace("{dir}", str(tmp_path)) for key, value in robot.items()}

    with pytest.raises(ConfigError) as error:
        parse_config(minimal_config(tmp_path, relay={"robots": {"r": robot}}), "slawatch.yml")

    assert problem in str(error.value)
    assert str(error.value).startswith("slawatch.yml: invalid config:")


@pytest.mark.parametrize(
    ("relay", "problem"),
    [
        ({"max_messages_per_minute": 21}, "relay.max_messages_per_minute"),
        ({"max_messages_per_minute": 0}, "relay.max_messages_per_minute"),
        ({"queue_wait": "1m"}, "queue_wait 1m is out of range"),
        ({"timeout": "0s"}, "timeout must be greater than 0s"),
    ],
)
def test_relay_limit_errors(tmp_path, relay, problem):
    with pytest.raises(ConfigError) as error:
        parse_config(minimal_config(tmp_path, relay=relay), "slawatch.yml")
    assert problem in str(error.value)


def test_relay_config_empty_file_named(tmp_path):
    (tmp_path / "empty").write_text("  \n", encoding="utf-8")
    data = minimal_config(tmp_path, relay={"robots": {"r": {"kind": "dingtalk", "url_file": str(tmp_path / "empty")}}})
    with pytest.raises(ConfigError) as error:
        parse_config(data, "slawatch.yml")
    assert "is empty: write the value into the file" in str(error.value)


def test_relay_config_defaults(tmp_path):
    config = parse_config(minimal_config(tmp_path))
    assert config.relay.robots == {}
    assert config.relay.max_messages_per_minute == 20
    assert json.loads(config.relay.model_dump_json())["queue_wait"] == 5.0


async def test_relay_reload_adds_robot(aiohttp_client, tmp_path, robot_server, robots):
    from conftest import write_config
    from slawatch.config import load_config

    robots_config = write_robot_secrets(tmp_path / "secrets", str(robot_server.make_url("")).rstrip("/"))
    path = write_config(tmp_path / "slawatch.yml", minimal_config(tmp_path))
    exporter = Exporter(load_config(path), config_path=str(path), registry=CollectorRegistry())
    client = await aiohttp_client(create_app(exporter))
    payload = make_payload([make_alert()])

    before = await client.post("/api/v1/relay/wecom/support-wecom", json=payload)
    write_config(path, minimal_config(tmp_path, relay={"robots": robots_config}))
    reload = await client.post("/-/reload")
    after = await client.post("/api/v1/relay/wecom/support-wecom", json=payload)

    assert before.status == 404
    assert reload.status == 200
    assert after.status == 200
    assert len(robots.of_kind("wecom")) == 1
