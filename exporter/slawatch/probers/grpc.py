"""gRPC health-checking prober (grpc.health.v1), with blackbox_exporter's metric names."""

from __future__ import annotations

import logging
import time
from pathlib import Path

from ..config import Module, split_host_port
from .net import ProbeError, resolve, run_steps
from .result import AddressGuard, ProbeLog, ProbeResult

logger = logging.getLogger("slawatch.prober.grpc")

PHASE_HELP = "Duration of gRPC request by phase"
SERVING_STATUSES = ("UNKNOWN", "SERVING", "NOT_SERVING", "SERVICE_UNKNOWN")


async def probe_grpc(target: str, module: Module, timeout: float, guard: AddressGuard | None = None) -> ProbeResult:
    """Call grpc.health.v1.Health/Check on host:port; catches target faults and returns them as a failed result."""
    result = ProbeResult()
    log = ProbeLog(logger, target)
    started = time.monotonic()
    await run_steps(_check(target, module, result, log, guard, timeout), timeout, result, log)
    result.duration = time.monotonic() - started
    result.probe_log = log
    for phase, seconds in result.phases.items():
        result.set("probe_grpc_duration_seconds", PHASE_HELP, seconds, phase=phase)
    return result


async def _check(target: str, module: Module, result: ProbeResult, log: ProbeLog, guard: AddressGuard | None,
                 timeout: float) -> None:
    try:
        import grpc
        from grpc_health.v1 import health_pb2, health_pb2_grpc
    except ImportError:
        raise ProbeError("grpc_unavailable", "the grpc prober needs the grpcio and grpcio-health-checking packages: "
                                             "install them with pip install 'slawatch[grpc]'") from None

    options = module.grpc
    host, port = split_host_port(target)
    if not host or port is None:
        raise ProbeError("invalid_target", f"{target!r} is not host:port")
    mark = time.monotonic()
    resolved = await resolve(host, options.preferred_ip_protocol, options.ip_protocol_fallback, result, log, guard)
    result.phases["resolve"] = time.monotonic() - mark

    address = f"[{resolved.ip}]:{port}" if ":" in resolved.ip else f"{resolved.ip}:{port}"
    # The channel dials the checked address; the authority keeps the target's name for Host and SNI.
    channel_options = [("grpc.default_authority", f"{host}:{port}")]
    result.set("probe_grpc_ssl", "Indicates if SSL was used for the connection", 1 if options.tls else 0)
    if options.tls:
        tls = options.tls_config
        if tls.insecure_skip_verify:
            raise ProbeError("config", "grpc tls_config.insecure_skip_verify is not supported by the Python gRPC "
                                       "client: set ca_file instead")
        root = Path(tls.ca_file).read_bytes() if tls.ca_file else None
        key = Path(tls.key_file).read_bytes() if tls.key_file else None
        chain = Path(tls.cert_file).read_bytes() if tls.cert_file else None
        channel_options.append(("grpc.ssl_target_name_override", tls.server_name or host))
        channel = grpc.aio.secure_channel(address, grpc.ssl_channel_credentials(root, key, chain), channel_options)
    else:
        channel = grpc.aio.insecure_channel(address, channel_options)

    mark = time.monotonic()
    try:
        stub = health_pb2_grpc.HealthStub(channel)
        response = await stub.Check(health_pb2.HealthCheckRequest(service=options.service), timeout=timeout)
    except grpc.aio.AioRpcError as error:
        result.phases["check"] = time.monotonic() - mark
        result.set("probe_grpc_status_code", "Response gRPC status code", error.code().value[0])
        reason = "timeout" if error.code() == grpc.StatusCode.DEADLINE_EXCEEDED else "grpc_status"
        raise ProbeError(reason, f"health check failed: {error.code().name}: {error.details()}") from None
    finally:
        await channel.close()
    result.phases["check"] = time.monotonic() - mark
    result.set("probe_grpc_status_code", "Response gRPC status code", 0)
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)
    for name in SERVING_STATUSES:
        result.set("probe_grpc_healthcheck_response", "Response HealthCheck response", 1 if name == status else 0,
                   serving_status=name)
    if status != "SERVING":
        raise ProbeError("grpc_not_serving", f"service {options.service!r} is {status}")
    result.success = True
