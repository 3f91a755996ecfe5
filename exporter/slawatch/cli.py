"""The `slawatch` command: serve, generate, check and stack."""

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
from pathlib import Path

from aiohttp import web

from . import __version__
from .config import Config, ConfigError, load_config
from .i18n import LOCALES, Catalog

logger = logging.getLogger("slawatch")

TEXT = Catalog({
    "config.valid": {"en": "{source}: config is valid ({targets} targets, {slos} SLOs)",
                     "zh-CN": "{source}：配置有效（{targets} 个探测目标，{slos} 个 SLO）"},
    "config.invalid": {"en": "The config was not loaded. Fix the problems above and run the command again.",
                       "zh-CN": "配置未加载。请修正上面列出的问题后重新运行命令。"},
    "generate.wrote": {"en": "Wrote {path}", "zh-CN": "已写入 {path}"},
    "generate.stale": {"en": "{path} differs from what `slawatch generate` writes now: run `slawatch generate` "
                                "and commit the result",
                       "zh-CN": "{path} 与 `slawatch generate` 当前生成的内容不一致：请运行 `slawatch generate` 并提交结果"},
    "generate.fresh": {"en": "Generated files are up to date in {path}", "zh-CN": "{path} 中的生成文件是最新的"},
    "check.tool_ok": {"en": "{tool}: {what} passed", "zh-CN": "{tool}：{what} 检查通过"},
    "check.tool_failed": {"en": "{tool}: {what} failed:\n{output}", "zh-CN": "{tool}：{what} 检查失败：\n{output}"},
    "check.tool_missing": {"en": "{tool} is not on PATH: skipped {what} (install it with "
                                  "`apt-get install {package}`)",
                           "zh-CN": "PATH 中没有 {tool}：已跳过 {what}（可用 `apt-get install {package}` 安装）"},
    "slo.import.warning": {"en": "Warning: {message}", "zh-CN": "警告：{message}"},
    "slo.import.wrote": {"en": "Wrote {count} SLOs to {path}: add them under slos: in slawatch.yml",
                         "zh-CN": "已将 {count} 个 SLO 写入 {path}：请把它们加到 slawatch.yml 的 slos: 下"},
    "slo.import.failed": {"en": "Nothing was imported. Fix the problems above and run the command again.",
                          "zh-CN": "未导入任何内容。请修正上面列出的问题后重新运行命令。"},
    "serve.listening": {"en": "slawatch {version} listening on {scheme}://{address}",
                        "zh-CN": "slawatch {version} 正在监听 {scheme}://{address}"},
})


def locale_from(config: Config | None) -> str:
    """Pick the operator's language: SLAWATCH_LOCALE, then the config, then English."""
    env = os.environ.get("SLAWATCH_LOCALE")
    if env in LOCALES:
        return env
    return config.global_.locale if config is not None else "en"


def setup_logging(level: str, log_format: str) -> None:
    if log_format == "json":
        fmt = '{"ts":"%(asctime)s","level":"%(levelname)s","logger":"%(name)s","msg":"%(message)s"}'
    else:
        fmt = "ts=%(asctime)s level=%(levelname)s logger=%(name)s msg=%(message)s"
    logging.basicConfig(level=level.upper(), format=fmt, stream=sys.stderr, force=True)
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)


def parse_listen_address(address: str) -> tuple[str | None, int]:
    """Split ":9115", "127.0.0.1:9115" or "[::1]:9115" into host and port."""
    host, _, port = address.rpartition(":")
    host = host.strip("[]") or None
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"invalid --web.listen-address {address!r}: use host:port, for example 127.0.0.1:9115")
    return host, int(port)


def _load_or_report(path: str | None) -> Config | None:
    try:
        return load_config(path)
    except ConfigError as error:
        print(error, file=sys.stderr)
        print(TEXT.get("config.invalid", locale_from(None)), file=sys.stderr)
        return None


def cmd_serve(args: argparse.Namespace) -> int:
    from .web import Exporter, create_app
    from .web.webconfig import basic_auth_middleware, load_web_config

    setup_logging(args.log_level, args.log_format)
    config = _load_or_report(args.config_file)
    if config is None:
        return 1
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

    runbooks = Path(args.web_runbooks_dir) if args.web_runbooks_dir else _find_runbooks()
    return asyncio.run(_serve(config, args.config_file, host, port, ssl_context, middlewares, runbooks))


def _find_runbooks() -> Path | None:
    candidate = Path(__file__).resolve().parents[2] / "docs" / "runbooks"
    return candidate if candidate.is_dir() else None


async def _serve(config: Config, config_path: str | None, host: str | None, port: int, ssl_context, middlewares,
                 runbooks: Path | None) -> int:
    from .web import Exporter, create_app

    exporter = Exporter(config, config_path, runbooks_dir=runbooks)
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

    logger.info("Listening on address address=%s:%d tls=%s", host or "", port, ssl_context is not None)
    print(TEXT.get("serve.listening", locale_from(config), version=__version__,
                   scheme="https" if ssl_context else "http", address=f"{host or '0.0.0.0'}:{port}"),
          file=sys.stderr, flush=True)

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
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
    config = _load_or_report(args.config_file)
    if config is None:
        return 1
    locale = locale_from(config)
    print(TEXT.get("config.valid", locale, source=args.config_file or "<embedded default config>",
                   targets=len(config.targets), slos=len(config.slos)))

    failed = False
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


def cmd_stack(args: argparse.Namespace) -> int:
    from .stack import run_stack

    return run_stack(args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="slawatch", description="Service-quality and support-latency monitoring "
                                                                  "for Prometheus, Alertmanager and Grafana.")
    parser.add_argument("--version", action="version", version=f"slawatch {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    def add_config(sub: argparse.ArgumentParser) -> None:
        sub.add_argument("--config.file", dest="config_file", default=None,
                         help="path of slawatch.yml (default: the embedded default config)")

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
    stack.set_defaults(func=cmd_stack)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)
