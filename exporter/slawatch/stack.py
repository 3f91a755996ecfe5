"""`slawatch stack`: the exporter, Prometheus and Alertmanager on loopback, for trying slawatch out.

The processes use the bundled configs from a checkout (prometheus/,
alertmanager/, rules/) and keep their data under --data-dir. An SMTP sink on
127.0.0.1:2525 stores the support-email notifications as .eml files there.
Ctrl-C stops every process this command started.
"""

from __future__ import annotations

import argparse
import ctypes
import logging
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from .config import ConfigError, load_config
from .i18n import Catalog

logger = logging.getLogger("slawatch.stack")

EXPORTER_PORT = 9115
PROMETHEUS_PORT = 9090
ALERTMANAGER_PORT = 9093
SMTP_PORT = 2525
READY_TIMEOUT = 60.0
PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>

TEXT = Catalog({
    "missing_binary": {"en": "{binary} is not installed: run `apt-get install {package}` (as root) and try again",
                       "zh-CN": "未安装 {binary}：请以 root 身份运行 `apt-get install {package}` 后重试"},
    "missing_file": {"en": "{path} not found: run this command from a slawatch checkout or pass --repo-dir",
                     "zh-CN": "找不到 {path}：请在 slawatch 代码目录中运行，或用 --repo-dir 指定目录"},
    "port_busy": {"en": "port {port} on 127.0.0.1, needed by {what}, is already in use: find the process with "
                        "`ss -ltnp 'sport = :{port}'` and stop it (an earlier `slawatch stack`, or Debian's service: "
                        "`systemctl stop {service}`), then try again",
                  "zh-CN": "{what} 需要的 127.0.0.1 端口 {port} 已被占用：用 `ss -ltnp 'sport = :{port}'` 找到占用它的进程"
                           "并停止（可能是之前的 `slawatch stack`，或 Debian 服务：`systemctl stop {service}`），然后重试"},
    "not_ready": {"en": "{what} did not become ready within {seconds:.0f}s: see its output above",
                  "zh-CN": "{what} 在 {seconds:.0f} 秒内未就绪：请查看上面的输出"},
    "exited": {"en": "{what} exited with code {code}: stopping the stack",
               "zh-CN": "{what} 已退出（退出码 {code}）：正在停止整个栈"},
    "ready": {"en": "slawatch stack is running. Press Ctrl-C to stop it.\n"
                    "  exporter      http://127.0.0.1:{exporter}/metrics\n"
                    "  probe         http://127.0.0.1:{exporter}/probe?target=http://127.0.0.1:{prometheus}/-/healthy&module=http_2xx\n"
                    "  Prometheus    http://127.0.0.1:{prometheus}/  (targets: /targets, rules: /rules, alerts: /alerts)\n"
                    "  Alertmanager  http://127.0.0.1:{alertmanager}/\n"
                    "  SMTP sink     127.0.0.1:{smtp}, mail saved in {mail}\n"
                    "  data          {data}",
              "zh-CN": "slawatch 栈正在运行。按 Ctrl-C 停止。\n"
                       "  导出器        http://127.0.0.1:{exporter}/metrics\n"
                       "  探测          http://127.0.0.1:{exporter}/probe?target=http://127.0.0.1:{prometheus}/-/healthy&module=http_2xx\n"
                       "  Prometheus    http://127.0.0.1:{prometheus}/  （目标：/targets，规则：/rules，告警：/alerts）\n"
                       "  Alertmanager  http://127.0.0.1:{alertmanager}/\n"
                       "  SMTP 接收器   127.0.0.1:{smtp}，邮件保存在 {mail}\n"
                       "  数据目录      {data}"},
    "stopping": {"en": "Stopping the slawatch stack", "zh-CN": "正在停止 slawatch 栈"},
    "stopped": {"en": "Stopped every process of the stack", "zh-CN": "栈中的所有进程均已停止"},
})


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _wait_ready(url: str, process: subprocess.Popen, deadline: float) -> bool:
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return False
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return True
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.3)
    return False


def _start_smtp_sink(mail_dir: Path):
    from aiosmtpd.controller import Controller
    from aiosmtpd.handlers import Mailbox

    mail_dir.mkdir(parents=True, exist_ok=True)
    controller = Controller(Mailbox(str(mail_dir)), hostname="127.0.0.1", port=SMTP_PORT)
    controller.start()
    return controller


def _stop(processes: list[tuple[str, subprocess.Popen]]) -> None:
    for _, process in processes:
        if process.poll() is None:
            process.terminate()
    deadline = time.monotonic() + 15
    for _, process in processes:
        try:
            process.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _raise_interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def _die_with_parent() -> None:
    """Ask Linux to send SIGTERM to this child when the stack process dies, even by SIGKILL."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        pass


def run_stack(args: argparse.Namespace) -> int:
    from .cli import locale_from
    from .logs import setup_logging

    setup_logging("info", "logfmt")
    try:
        config = load_config(args.config_file)
    except ConfigError as error:
        print(error, file=sys.stderr)
        return 1
    locale = locale_from(config)
    repo = Path(args.repo_dir).resolve()
    data = Path(args.data_dir).resolve()

    binaries = {"prometheus": "prometheus", "alertmanager": "prometheus-alertmanager"}
    found = {}
    for name, package in binaries.items():
        found[name] = shutil.which(name) or shutil.which(f"prometheus-{name}")
        if found[name] is None:
            print(TEXT.get("missing_binary", locale, binary=name, package=package), file=sys.stderr)
            return 1
    for relative in ("prometheus/prometheus.yml", "alertmanager/alertmanager.yml", "rules"):
        if not (repo / relative).exists():
            print(TEXT.get("missing_file", locale, path=repo / relative), file=sys.stderr)
            return 1
    for port, what, service in ((EXPORTER_PORT, "exporter", "prometheus-blackbox-exporter"),
                                (PROMETHEUS_PORT, "Prometheus", "prometheus"),
                                (ALERTMANAGER_PORT, "Alertmanager", "prometheus-alertmanager"),
                                (SMTP_PORT, "SMTP sink", "exim4")):
        if not _port_free(port):
            print(TEXT.get("port_busy", locale, port=port, what=what, service=service), file=sys.stderr)
            return 1

    for sub in ("prometheus", "alertmanager", "exporter"):
        (data / sub).mkdir(parents=True, exist_ok=True)
    smtp = _start_smtp_sink(data / "mail")

    exporter_cmd = [sys.executable, "-m", "slawatch", "serve", f"--web.listen-address=127.0.0.1:{EXPORTER_PORT}",
                    f"--web.runbooks-dir={repo / 'docs' / 'runbooks'}", f"--event-loop={args.event_loop}"]
    if args.config_file:
        exporter_cmd.append(f"--config.file={Path(args.config_file).resolve()}")
    commands = [
        ("exporter", exporter_cmd, data / "exporter", f"http://127.0.0.1:{EXPORTER_PORT}/-/healthy"),
        ("Prometheus", [found["prometheus"], f"--config.file={repo / 'prometheus' / 'prometheus.yml'}",
                        f"--storage.tsdb.path={data / 'prometheus'}",
                        f"--web.listen-address=127.0.0.1:{PROMETHEUS_PORT}", "--web.enable-lifecycle"],
         repo, f"http://127.0.0.1:{PROMETHEUS_PORT}/-/ready"),
        ("Alertmanager", [found["alertmanager"], f"--config.file={repo / 'alertmanager' / 'alertmanager.yml'}",
                          f"--storage.path={data / 'alertmanager'}",
                          f"--web.listen-address=127.0.0.1:{ALERTMANAGER_PORT}", "--cluster.listen-address="],
         repo, f"http://127.0.0.1:{ALERTMANAGER_PORT}/-/ready"),
    ]

    processes: list[tuple[str, subprocess.Popen]] = []
    # Ctrl-C, kill and a closed terminal all stop the whole stack, even when the
    # shell that started it ignores SIGINT (as `make run &` in a script does).
    previous = {signum: signal.signal(signum, _raise_interrupt)
                for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    try:
        for what, command, cwd, _ in commands:
            processes.append((what, subprocess.Popen(command, cwd=cwd, start_new_session=True,
                                                     preexec_fn=_die_with_parent)))
        deadline = time.monotonic() + READY_TIMEOUT
        for (what, process), (_, _, _, ready_url) in zip(processes, commands):
            if not _wait_ready(ready_url, process, deadline):
                print(TEXT.get("not_ready", locale, what=what, seconds=READY_TIMEOUT), file=sys.stderr)
                return 1

        print(TEXT.get("ready", locale, exporter=EXPORTER_PORT, prometheus=PROMETHEUS_PORT,
                       alertmanager=ALERTMANAGER_PORT, smtp=SMTP_PORT, mail=data / "mail", data=data), flush=True)
        while True:
            for what, process in processes:
                code = process.poll()
                if code is not None:
                    print(TEXT.get("exited", locale, what=what, code=code), file=sys.stderr)
                    return 1
            time.sleep(0.5)
    except KeyboardInterrupt:
        print(TEXT.get("stopping", locale), file=sys.stderr)
        return 0
    finally:
        _stop(processes)
        smtp.stop()
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        print(TEXT.get("stopped", locale), file=sys.stderr)
