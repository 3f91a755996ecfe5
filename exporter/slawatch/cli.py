"""The `slawatch` command: serve, generate, check, stack and report."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

from aiohttp import web

from . import __version__
from .config import Config, ConfigError, load_config
from .i18n import LOCALES, Catalog
from .logs import setup_logging

logger = logging.getLogger("slawatch")

# Values of --event-loop: "auto" runs uvloop when it is installed, else asyncio's default loop.
EVENT_LOOPS = ("auto", "uvloop", "asyncio")

TEXT = Catalog({
    # target_word and slo_word carry the English singular or plural; the Chinese text needs neither.
    "config.valid": {"en": "{source}: config is valid ({targets} {target_word}, {slos} {slo_word})",
                     "zh-CN": "{source}：配置有效（{targets} 个探测目标，{slos} 个 SLO）"},
    "config.empty": {"en": "{source}: warning: the config has no targets and no SLOs, so nothing will be probed: "
                            "check the path, or add targets as in the embedded default config",
                     "zh-CN": "{source}：警告：配置中没有探测目标也没有 SLO，因此不会探测任何东西：请检查路径，"
                              "或参照内置默认配置添加目标"},
    "config.problems": {"en": "{source}: invalid config:", "zh-CN": "{source}：配置无效："},
    "config.invalid": {"en": "The config was not loaded. Fix the problems above and run the command again.",
                       "zh-CN": "配置未加载。请修正上面列出的问题后重新运行命令。"},
    "generate.wrote": {"en": "Wrote {path}", "zh-CN": "已写入 {path}"},
    "generate.stale": {"en": "{path} differs from what `slawatch generate` writes now: run `slawatch generate` "
                                "and commit the result",
                       "zh-CN": "{path} 与 `slawatch generate` 当前生成的内容不一致：请运行 `slawatch generate` 并提交结果"},
    "generate.fresh": {"en": "Generated files are up to date in {path}", "zh-CN": "{path} 中的生成文件是最新的"},
    "check.secrets_invalid": {"en": "{source}: `slawatch serve` cannot use these secrets:",
                              "zh-CN": "{source}：`slawatch serve` 无法使用以下密钥："},
    "check.secrets_fix": {"en": "An unusable webhook secret stops `slawatch serve` at start-up, and an unusable "
                                "helpdesk credential file fails every poll. Fix the problems above and run the "
                                "command again.",
                          "zh-CN": "webhook 密钥不可用时 `slawatch serve` 无法启动，工单系统凭据文件不可用时每次轮询都会失败。"
                                   "请修正上面列出的问题后重新运行命令。"},
    "check.tool_ok": {"en": "{tool}: {what} passed", "zh-CN": "{tool}：{what} 检查通过"},
    "check.tool_failed": {"en": "{tool}: {what} failed:\n{output}", "zh-CN": "{tool}：{what} 检查失败：\n{output}"},
    "check.tool_missing": {"en": "{tool} is not on PATH: skipped {what} (install it with "
                                  "`apt-get install {package}`)",
                           "zh-CN": "PATH 中没有 {tool}：已跳过 {what}（可用 `apt-get install {package}` 安装）"},
    "announce.posted": {"en": "Posted {kind} announcement {id} to {url}",
                        "zh-CN": "已向 {url} 发布{kind}公告，编号 {id}"},
    "announce.rejected": {"en": "The exporter rejected the announcement (HTTP {status}): {error}",
                          "zh-CN": "导出器拒绝了该公告（HTTP {status}）：{error}"},
    "announce.failed": {"en": "Cannot reach the exporter at {url}: {error}. Check --web.url and that the exporter "
                              "is running.",
                        "zh-CN": "无法连接导出器 {url}：{error}。请检查 --web.url 以及导出器是否在运行。"},
    "announce.no_token": {"en": "No announcement token: pass --token-file, set status.announce_token_file in the "
                                "config, or set {env}",
                          "zh-CN": "没有公告令牌：请传入 --token-file、在配置中设置 status.announce_token_file，"
                                   "或设置环境变量 {env}"},
    "report.wrote": {"en": "Wrote {path}", "zh-CN": "已写入 {path}"},
    "report.failed": {"en": "The report was not written: {error}", "zh-CN": "未生成报告：{error}"},
    "slo.import.warning": {"en": "Warning: {message}", "zh-CN": "警告：{message}"},
    "slo.import.wrote": {"en": "Wrote {count} SLOs to {path}: add them under slos: in slawatch.yml",
                         "zh-CN": "已将 {count} 个 SLO 写入 {path}：请把它们加到 slawatch.yml 的 slos: 下"},
    "slo.import.failed": {"en": "Nothing was imported. Fix the problems above and run the command again.",
                          "zh-CN": "未导入任何内容。请修正上面列出的问题后重新运行命令。"},
    "serve.listening": {"en": "slawatch {version} listening on {scheme}://{address}",
                        "zh-CN": "slawatch {version} 正在监听 {scheme}://{address}"},
    "serve.event_loop": {"en": "Running on the {loop} event loop", "zh-CN": "正在 {loop} 事件循环上运行"},
    "serve.uvloop_missing": {"en": "uvloop is not installed, so the exporter runs on asyncio's default event loop: "
                                   "run `pip install uvloop` to use uvloop",
                             "zh-CN": "未安装 uvloop，因此导出器在 asyncio 默认事件循环上运行：运行 `pip install uvloop` "
                                      "即可改用 uvloop"},
    "serve.uvloop_required": {"en": "--event-loop=uvloop requires the uvloop package, which is not installed: run "
                                    "`pip install uvloop`, or pass --event-loop=asyncio",
                              "zh-CN": "--event-loop=uvloop 需要 uvloop 包，但它未安装：请运行 `pip install uvloop`，"
                                       "或改用 --event-loop=asyncio"},
})


def locale_from(config: Config | None) -> str:
    """Pick the operator's language: SLAWATCH_LOCALE, then the config, then English."""
    env = os.environ.get("SLAWATCH_LOCALE")
    if env in LOCALES:
        return env
    return config.global_.locale if config is not None else "en"


def parse_listen_address(address: str) -> tuple[str | None, int]:
    """Split ":9115", "127.0.0.1:9115" or "[::1]:9115" into host and port."""
    host, separator, port = address.rpartition(":")
    host = host.strip("[]") or None
    if not separator or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"invalid --web.listen-address {address!r}: use host:port, for example 127.0.0.1:9115")
    return host, int(port)


def _load_or_report(path: str | None) -> Config | None:
    try:
        return load_config(path)
    except ConfigError as error:
        locale = locale_from(None)
        print(TEXT.get("config.problems", locale, source=error.source), file=sys.stderr)
        for problem in error.problems:
            print(f"  - {problem}", file=sys.stderr)
        print(TEXT.get("config.invalid", locale), file=sys.stderr)
        return None


def cmd_serve(args: argparse.Namespace) -> int:
    from .web import Exporter, create_app
    from .web.webconfig import basic_auth_middleware, load_web_config

    setup_logging(args.log_level, args.log_format)
    config = _load_or_report(args.config_file)
    if config is None:
        return 1
    if not config.targets and not config.slos:
        logger.warning(TEXT.get("config.empty", locale_from(config), source=args.config_file))
    try:
        host, port = parse_listen_address(args.web_listen_address)
    except ValueError as error:
        print(error, file=sys.stderr)
        return 2

    ssl_context = None
    middlewares = []
    if args.web_config_file:
        try:
            web_config = load_web_config(args.web_config_file)
        except ConfigError as error:
            print(error, file=sys.stderr)
            return 1
        ssl_context = web_config.ssl_context
        if web_config.users:
            middlewares.append(basic_auth_middleware(web_config.users))

    try:
        loop_factory = event_loop_factory(args.event_loop)
    except ImportError:
        print(TEXT.get("serve.uvloop_required", locale_from(config)), file=sys.stderr)
        return 2
    if args.event_loop == "auto" and loop_factory is None:
        logger.warning(TEXT.get("serve.uvloop_missing", locale_from(config)))

    runbooks = Path(args.web_runbooks_dir) if args.web_runbooks_dir else _find_runbooks()
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        return runner.run(_serve(config, args.config_file, host, port, ssl_context, middlewares, runbooks))


def event_loop_factory(choice: str) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """Return the loop factory for --event-loop, or None for asyncio's default loop.

    "auto" picks uvloop when it can be imported. Raises ImportError for
    "uvloop" when it cannot.
    """
    if choice == "asyncio":
        return None
    try:
        import uvloop
    except ImportError:
        if choice == "uvloop":
            raise
        return None
    return uvloop.new_event_loop


def describe_event_loop(loop: asyncio.AbstractEventLoop) -> str:
    """Name the running loop for the start-up log, for example "uvloop 0.23.0" or "asyncio"."""
    package = type(loop).__module__.partition(".")[0]
    if package == "uvloop":
        import uvloop

        return f"uvloop {uvloop.__version__}"
    return package


def _find_runbooks() -> Path | None:
    candidate = Path(__file__).resolve().parents[2] / "docs" / "runbooks"
    return candidate if candidate.is_dir() else None


async def _serve(config: Config, config_path: str | None, host: str | None, port: int, ssl_context, middlewares,
                 runbooks: Path | None) -> int:
    from .web import Exporter, create_app

    try:
        exporter = Exporter(config, config_path, runbooks_dir=runbooks)
    except ValueError as error:
        # For example an unreadable tickets.webhook.secret_file.
        print(error, file=sys.stderr)
        return 1
    app = create_app(exporter, middlewares)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, host, port, ssl_context=ssl_context)
    try:
        await site.start()
    except OSError as error:
        logger.error("Cannot listen address=%s:%d err=%s", host or "", port, error.strerror)
        await runner.cleanup()
        return 1

    loop = asyncio.get_running_loop()
    logger.info(TEXT.get("serve.event_loop", locale_from(config), loop=describe_event_loop(loop)))
    logger.info(TEXT.get("serve.listening", locale_from(config), version=__version__,
                         scheme="https" if ssl_context else "http", address=f"{host or '0.0.0.0'}:{port}"))

    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    loop.add_signal_handler(signal.SIGHUP, lambda: asyncio.ensure_future(exporter.reload()))
    await stop.wait()
    logger.info("Shutting down")
    await runner.cleanup()
    return 0


def _write_generated(config: Config, output: Path, rule_format: str = "rules") -> list[Path]:
    from .generate.dashboards import write_dashboards
    from .generate.rules import write_prometheus_rule, write_rules

    writer = write_prometheus_rule if rule_format == "prometheusrule" else write_rules
    return writer(config, output) + write_dashboards(config, output)


def cmd_generate(args: argparse.Namespace) -> int:
    config = _load_or_report(args.config_file)
    if config is None:
        return 1
    locale = locale_from(config)
    output = Path(args.output_dir)

    if not args.check:
        for path in _write_generated(config, output, args.format):
            print(TEXT.get("generate.wrote", locale, path=path))
        return 0

    with tempfile.TemporaryDirectory() as scratch:
        stale = []
        for fresh in _write_generated(config, Path(scratch), args.format):
            relative = fresh.relative_to(scratch)
            committed = output / relative
            if not committed.is_file() or committed.read_bytes() != fresh.read_bytes():
                stale.append(committed)
    for path in stale:
        print(TEXT.get("generate.stale", locale, path=path), file=sys.stderr)
    if not stale:
        print(TEXT.get("generate.fresh", locale, path=output))
    return 1 if stale else 0


def cmd_slo_import(args: argparse.Namespace) -> int:
    from .slo_import import SpecImportError, import_files, render_slos

    locale = locale_from(None)
    try:
        result = import_files(args.files)
    except SpecImportError as error:
        print(error, file=sys.stderr)
        print(TEXT.get("slo.import.failed", locale), file=sys.stderr)
        return 1
    for message in result.warnings:
        print(TEXT.get("slo.import.warning", locale, message=message), file=sys.stderr)
    text = render_slos(result)
    if args.output == "-":
        sys.stdout.write(text)
    else:
        Path(args.output).write_text(text, encoding="utf-8")
        print(TEXT.get("slo.import.wrote", locale, count=len(result.slos), path=args.output), file=sys.stderr)
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    from .tickets.secrets import ticket_secret_problems

    config = _load_or_report(args.config_file)
    if config is None:
        return 1
    locale = locale_from(config)
    source = args.config_file or "<embedded default config>"
    failed = False
    # parse_config reads no ticket secrets, so that generate and report work on a machine without
    # them. check reads them here as serve would.
    secret_problems = ticket_secret_problems(config.tickets)
    if secret_problems:
        print(TEXT.get("check.secrets_invalid", locale, source=source), file=sys.stderr)
        for problem in secret_problems:
            print(f"  - {problem}", file=sys.stderr)
        print(TEXT.get("check.secrets_fix", locale), file=sys.stderr)
        failed = True
    else:
        print(TEXT.get("config.valid", locale, source=source, targets=len(config.targets), slos=len(config.slos),
                       target_word="target" if len(config.targets) == 1 else "targets",
                       slo_word="SLO" if len(config.slos) == 1 else "SLOs"))
    if not config.targets and not config.slos:
        print(TEXT.get("config.empty", locale, source=source), file=sys.stderr)

    with tempfile.TemporaryDirectory() as scratch:
        rule_files = [p for p in _write_generated(config, Path(scratch)) if p.suffix in (".yml", ".yaml")]
        failed |= not _run_tool(locale, "promtool", ["check", "rules", *map(str, rule_files)],
                                "rules", "prometheus")
    alertmanager_config = Path(args.alertmanager_config)
    if alertmanager_config.is_file():
        failed |= not _run_tool(locale, "amtool", ["check-config", str(alertmanager_config)],
                                str(alertmanager_config), "prometheus-alertmanager")
    return 1 if failed else 0


def _run_tool(locale: str, tool: str, arguments: list[str], what: str, package: str) -> bool:
    if shutil.which(tool) is None:
        print(TEXT.get("check.tool_missing", locale, tool=tool, what=what, package=package))
        return True
    completed = subprocess.run([tool, *arguments], capture_output=True, text=True, timeout=120)
    if completed.returncode != 0:
        print(TEXT.get("check.tool_failed", locale, tool=tool, what=what,
                       output=(completed.stdout + completed.stderr).strip()), file=sys.stderr)
        return False
    print(TEXT.get("check.tool_ok", locale, tool=tool, what=what))
    return True


def cmd_announce(args: argparse.Namespace) -> int:
    import requests

    from .config import StatusConfig
    from .web.status import read_announce_token

    config = _load_or_report(args.config_file) if args.config_file else None
    locale = locale_from(config)
    status = config.status if config is not None else StatusConfig()
    if args.token_file:
        status = status.model_copy(update={"announce_token_file": args.token_file})
    token = read_announce_token(status)
    if token is None:
        print(TEXT.get("announce.no_token", locale, env=status.announce_token_env), file=sys.stderr)
        return 2

    body: dict = {"kind": args.kind, "services": args.service or [], "title": _localized(args.title, args.title_zh)}
    if args.body or args.body_zh:
        body["body"] = _localized(args.body, args.body_zh)
    if args.link:
        body["link"] = args.link
    if args.starts:
        body["starts_at"] = args.starts
    if args.ends:
        body["ends_at"] = args.ends

    url = args.web_url.rstrip("/") + "/api/v1/announcements"
    try:
        response = requests.post(url, json=body, headers={"Authorization": f"Bearer {token}"}, timeout=args.timeout)
    except requests.RequestException as error:
        print(TEXT.get("announce.failed", locale, url=url, error=error), file=sys.stderr)
        return 1
    try:
        reply = response.json()
    except ValueError:
        reply = {"error": response.text.strip()}
    if response.status_code != 201:
        print(TEXT.get("announce.rejected", locale, status=response.status_code, error=reply.get("error", "")),
              file=sys.stderr)
        return 1
    print(TEXT.get("announce.posted", locale, kind=args.kind, id=reply.get("id"), url=args.web_url))
    return 0


def _localized(english: str | None, chinese: str | None) -> dict[str, str]:
    return {locale: text for locale, text in (("en", english), ("zh-CN", chinese)) if text}


def cmd_stack(args: argparse.Namespace) -> int:
    from .stack import run_stack

    return run_stack(args)


def cmd_report(args: argparse.Namespace) -> int:
    from .report import Period, ReportError, write_report

    config = _load_or_report(args.config_file)
    if config is None:
        return 1
    locale = args.locale or locale_from(config)
    try:
        paths = write_report(config, args.prometheus, Period.parse(args.month), locale, Path(args.out),
                             pdf=args.pdf)
    except ReportError as error:
        print(TEXT.get("report.failed", locale, error=error), file=sys.stderr)
        return 1
    for path in paths:
        print(TEXT.get("report.wrote", locale, path=path))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="slawatch", description="Service-quality and support-latency monitoring "
                                                                  "for Prometheus, Alertmanager and Grafana.")
    parser.add_argument("--version", action="version", version=f"slawatch {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    def add_config(sub: argparse.ArgumentParser) -> None:
        sub.add_argument("--config.file", dest="config_file", default=None,
                         help="path of slawatch.yml (default: the embedded default config)")

    def add_event_loop(sub: argparse.ArgumentParser) -> None:
        sub.add_argument("--event-loop", dest="event_loop", default="auto", choices=list(EVENT_LOOPS),
                         help="event loop of the exporter: auto uses uvloop when it is installed, else asyncio "
                              "(default auto)")

    serve = commands.add_parser("serve", help="run the exporter")
    add_config(serve)
    serve.add_argument("--web.listen-address", dest="web_listen_address", default=":9115",
                       help="address to listen on, host:port (default :9115, all interfaces)")
    serve.add_argument("--web.config.file", dest="web_config_file", default=None,
                       help="exporter-toolkit web config file for TLS and basic auth")
    serve.add_argument("--web.runbooks-dir", dest="web_runbooks_dir", default=None,
                       help="directory of runbook Markdown files served under /runbooks/")
    serve.add_argument("--log.level", dest="log_level", default="info", choices=["debug", "info", "warn", "error"])
    serve.add_argument("--log.format", dest="log_format", default="logfmt", choices=["logfmt", "json"])
    add_event_loop(serve)
    serve.set_defaults(func=cmd_serve)

    generate = commands.add_parser("generate", help="write rules/ and dashboards/ from the config")
    add_config(generate)
    generate.add_argument("--output-dir", default=".", help="directory that receives rules/ and dashboards/")
    generate.add_argument("--check", action="store_true",
                          help="write nothing; exit 1 if the files in --output-dir differ from what would be written")
    generate.add_argument("--format", choices=["rules", "prometheusrule"], default="rules",
                          help="rules: Prometheus rule file rules/slawatch-rules.yml (default); prometheusrule: "
                               "Prometheus Operator manifest kubernetes/slawatch-prometheusrule.yml")
    generate.set_defaults(func=cmd_generate)

    check = commands.add_parser("check", help="validate the config, the generated rules and the Alertmanager config")
    add_config(check)
    check.add_argument("--alertmanager.config", dest="alertmanager_config", default="alertmanager/alertmanager.yml",
                       help="Alertmanager config to check with amtool when the file exists")
    check.set_defaults(func=cmd_check)

    announce = commands.add_parser("announce", help="post a maintenance window, an update or a report link to "
                                                    "the status page")
    announce.add_argument("kind", choices=["maintenance", "update", "report"], help="kind of announcement")
    add_config(announce)
    announce.add_argument("--web.url", dest="web_url", default="http://127.0.0.1:9115",
                          help="base URL of the running exporter (default http://127.0.0.1:9115)")
    announce.add_argument("--token-file", default=None,
                          help="file holding the bearer token (default: status.announce_token_file of the config, "
                               "then the SLAWATCH_ANNOUNCE_TOKEN environment variable)")
    announce.add_argument("--service", action="append", help="affected public service; repeat for several "
                                                             "(default: all services)")
    announce.add_argument("--title", required=True, help="public title in English (used for both languages "
                                                         "when --title-zh is missing)")
    announce.add_argument("--title-zh", default=None, help="public title in Simplified Chinese")
    announce.add_argument("--body", default=None, help="public text in English")
    announce.add_argument("--body-zh", default=None, help="public text in Simplified Chinese")
    announce.add_argument("--starts", default=None, help="maintenance start, RFC 3339, e.g. 2026-12-05T01:00:00Z")
    announce.add_argument("--ends", default=None, help="maintenance end, RFC 3339, e.g. 2026-12-05T03:00:00Z")
    announce.add_argument("--link", default=None, help="http(s) URL, required for a report")
    announce.add_argument("--timeout", type=float, default=10.0, help="request timeout in seconds (default 10)")
    announce.set_defaults(func=cmd_announce)
    slo = commands.add_parser("slo", help="work with SLO specs")
    slo_commands = slo.add_subparsers(dest="slo_command", required=True)
    slo_import = slo_commands.add_parser(
        "import", help="convert Sloth prometheus/v1 and OpenSLO v1 SLO specs to slawatch slos: entries")
    slo_import.add_argument("files", nargs="+", metavar="FILE", help="Sloth or OpenSLO YAML files")
    slo_import.add_argument("--output", "-o", default="-", help="file to write the slos: YAML to (default: stdout)")
    slo_import.set_defaults(func=cmd_slo_import)

    stack = commands.add_parser("stack", help="run the exporter, Prometheus and Alertmanager on loopback")
    add_config(stack)
    stack.add_argument("--repo-dir", default=".", help="slawatch checkout holding prometheus/, alertmanager/, rules/")
    stack.add_argument("--data-dir", default=".stack", help="directory for Prometheus, Alertmanager and ticket data")
    add_event_loop(stack)
    stack.set_defaults(func=cmd_stack)

    report = commands.add_parser("report", help="write the monthly service report as HTML and Markdown")
    add_config(report)
    report.add_argument("--month", required=True, help="calendar month in UTC, YYYY-MM, for example 2026-11")
    report.add_argument("--prometheus", default="http://127.0.0.1:9090",
                        help="base URL of the Prometheus HTTP API (default http://127.0.0.1:9090)")
    report.add_argument("--locale", choices=list(LOCALES), default=None,
                        help="language of the report (default: SLAWATCH_LOCALE, then global.locale)")
    report.add_argument("--out", default="reports", help="directory that receives the report and its charts")
    report.add_argument("--pdf", action="store_true",
                        help="also print the HTML to PDF with headless Chromium (Debian package chromium)")
    report.set_defaults(func=cmd_report)
    tickets = commands.add_parser("tickets", help="ticket store tools")
    ticket_commands = tickets.add_subparsers(dest="tickets_command", required=True)
    backfill = ticket_commands.add_parser(
        "backfill", help="write past ticket metrics as OpenMetrics for promtool tsdb create-blocks-from openmetrics")
    add_config(backfill)
    backfill.add_argument("--events", help="JSON-lines file of ticket events to replay")
    backfill.add_argument("--database", help="slawatch ticket store to read (it is copied, never changed)")
    backfill.add_argument("--out", required=True, help="OpenMetrics file to write")
    backfill.add_argument("--step", default="5m",
                          help="time between samples, a duration of at least 1s such as 1m or 5m (default 5m)")
    backfill.add_argument("--start", help="first sample time, RFC 3339 (2025-03-01T00:00:00Z) or a date "
                                          "(midnight UTC); default: the oldest event")
    backfill.add_argument("--end", help="last sample time, RFC 3339 or a date (midnight UTC); default: one step "
                                        "after the newest event")
    backfill.add_argument("--max-samples", help="maximum number of samples to write; a larger output is rejected "
                                                "before anything is written (default 20000000)")
    backfill.set_defaults(func=cmd_tickets_backfill)
    return parser


def cmd_tickets_backfill(args: argparse.Namespace) -> int:
    from .tickets.backfill_command import run_backfill

    config = _load_or_report(args.config_file)
    if config is None:
        return 1
    return run_backfill(config.tickets, locale_from(config), args.out, step=args.step, start=args.start,
                        end=args.end, max_samples=args.max_samples, events=args.events, database=args.database)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)
