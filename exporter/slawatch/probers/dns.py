"""DNS prober over UDP or TCP with dnspython, with blackbox_exporter's metric names."""

from __future__ import annotations

import logging
import re
import time

import dns.asyncquery
import dns.exception
import dns.flags
import dns.message
import dns.rcode
import dns.rdataclass
import dns.rdatatype

from ..config import DNSProbeConfig, Module, RRValidation, split_host_port
from .net import ProbeError, resolve, run_steps
from .result import AddressGuard, ProbeLog, ProbeResult

logger = logging.getLogger("slawatch.prober.dns")

PHASE_HELP = "Duration of DNS request by phase"


def dns_host_port(target: str) -> tuple[str, int]:
    """Split a dns target; a bare host or IPv6 address means port 53."""
    if not target.startswith("[") and target.count(":") > 1:
        return target, 53
    host, port = split_host_port(target)
    if port is None:
        return target.strip("[]"), 53
    return host, port


async def probe_dns(target: str, module: Module, timeout: float, guard: AddressGuard | None = None) -> ProbeResult:
    """Send one DNS query to the target server and validate the response; catches target faults and returns them as a failed result."""
    result = ProbeResult()
    log = ProbeLog(logger, target)
    started = time.monotonic()
    for name, help_text in (("probe_dns_answer_rrs", "Returns number of entries in the answer resource record list"),
                            ("probe_dns_authority_rrs", "Returns number of entries in the authority resource record list"),
                            ("probe_dns_additional_rrs",
                             "Returns number of entries in the additional resource record list"),
                            ("probe_dns_query_succeeded", "Displays whether or not the query was executed successfully")):
        result.set(name, help_text, 0)
    await run_steps(_query(target, module.dns, result, log, guard, started + timeout), timeout, result, log)
    result.duration = time.monotonic() - started
    result.probe_log = log
    for phase, seconds in result.phases.items():
        result.set("probe_dns_duration_seconds", PHASE_HELP, seconds, phase=phase)
    return result


async def _query(target: str, options: DNSProbeConfig, result: ProbeResult, log: ProbeLog,
                 guard: AddressGuard | None, deadline: float) -> None:
    host, port = dns_host_port(target)
    mark = time.monotonic()
    resolved = await resolve(host, options.preferred_ip_protocol, options.ip_protocol_fallback, result, log, guard)
    result.phases["resolve"] = time.monotonic() - mark

    query = dns.message.make_query(options.query_name, dns.rdatatype.from_text(options.query_type),
                                   dns.rdataclass.from_text(options.query_class))
    if not options.recursion_desired:
        query.flags &= ~dns.flags.RD
    log.debug("Making DNS query server=%s port=%d name=%s type=%s transport=%s", resolved.ip, port,
              options.query_name, options.query_type, options.transport_protocol)

    # dnspython's async queries do not separate connect from request, so the
    # connect phase is 0, as blackbox_exporter reports for UDP.
    result.phases["connect"] = 0.0
    mark = time.monotonic()
    remaining = max(0.001, deadline - time.monotonic())
    try:
        if options.transport_protocol == "tcp":
            response = await dns.asyncquery.tcp(query, resolved.ip, timeout=remaining, port=port)
        else:
            response = await dns.asyncquery.udp(query, resolved.ip, timeout=remaining, port=port,
                                                ignore_unexpected=True)
    except dns.exception.Timeout:
        result.phases["request"] = time.monotonic() - mark
        raise ProbeError("timeout", "no DNS response before the deadline") from None
    except (OSError, EOFError) as error:
        result.phases["request"] = time.monotonic() - mark
        raise ProbeError("connect", f"DNS query to {resolved.ip}:{port} failed: {error}") from None
    except dns.exception.DNSException as error:
        result.phases["request"] = time.monotonic() - mark
        raise ProbeError("dns_protocol", f"invalid DNS response: {error}") from None
    result.phases["request"] = time.monotonic() - mark

    result.set("probe_dns_query_succeeded", "Displays whether or not the query was executed successfully", 1)
    sections = {"answer": response.answer, "authority": response.authority, "additional": response.additional}
    records = {name: _records(rrsets) for name, rrsets in sections.items()}
    for name, lines in records.items():
        result.set(f"probe_dns_{name}_rrs", f"Returns number of entries in the {name} resource record list",
                   len(lines))
    for rrset in response.answer + response.authority:
        if rrset.rdtype == dns.rdatatype.SOA:
            result.set("probe_dns_serial", "Returns the serial number of the zone", rrset[0].serial)
            break

    rcode = dns.rcode.to_text(response.rcode())
    if rcode not in [code.upper() for code in options.valid_rcodes]:
        raise ProbeError("dns_rcode", f"response code {rcode} is not in valid_rcodes {options.valid_rcodes}")
    for name, validation in (("answer", options.validate_answer_rrs), ("authority", options.validate_authority_rrs),
                             ("additional", options.validate_additional_rrs)):
        problem = _validate(records[name], validation)
        if problem:
            raise ProbeError("dns_records", f"{name} section: {problem}")
    result.success = True
    log.info("Validation succeeded rcode=%s answers=%d", rcode, len(records["answer"]))


def _records(rrsets) -> list[str]:
    """Format each record as Go's miekg/dns RR.String() does, tab-separated, so blackbox regexps match."""
    lines = []
    for rrset in rrsets:
        for rdata in rrset:
            lines.append("\t".join([rrset.name.to_text(), str(rrset.ttl), dns.rdataclass.to_text(rrset.rdclass),
                                    dns.rdatatype.to_text(rrset.rdtype), rdata.to_text()]))
    return lines


def _validate(lines: list[str], validation: RRValidation) -> str | None:
    for pattern in validation.fail_if_matches_regexp:
        if any(re.search(pattern, line) for line in lines):
            return f"a record matches fail_if_matches_regexp {pattern!r}"
    for pattern in validation.fail_if_all_match_regexp:
        if lines and all(re.search(pattern, line) for line in lines):
            return f"all records match fail_if_all_match_regexp {pattern!r}"
    for pattern in validation.fail_if_not_matches_regexp:
        if any(not re.search(pattern, line) for line in lines):
            return f"a record does not match fail_if_not_matches_regexp {pattern!r}"
    for pattern in validation.fail_if_none_matches_regexp:
        if not any(re.search(pattern, line) for line in lines):
            return f"no record matches fail_if_none_matches_regexp {pattern!r}"
    return None
