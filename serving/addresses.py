"""Checks of the server's addresses before anything starts: tritonserver itself reports a busy port,
an unusable host or a port given twice only by failing its start, which pytriton waits out for
two minutes and then reports with a traceback."""

from __future__ import annotations

import concurrent.futures
import errno
import ipaddress
import socket

from climax_deploy.errors import BadInputError

RESOLVE_TIMEOUT_S = 5.0


def resolve_host(host: str, timeout_s: float = RESOLVE_TIMEOUT_S) -> list[tuple[int, str]]:
    """(family, address) of every address `host` names; a name that does not resolve in time is refused."""
    try:
        ip = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        pass
    else:
        return [(socket.AF_INET6 if ip.version == 6 else socket.AF_INET, str(ip))]
    if not host or len(host) > 253:
        raise BadInputError(f"--host must be an IP address or a host name, got {host!r}")
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=1)
    try:
        infos = pool.submit(socket.getaddrinfo, host, None, proto=socket.IPPROTO_TCP).result(timeout=timeout_s)
    except concurrent.futures.TimeoutError:
        raise BadInputError(f"--host {host!r} did not resolve within {timeout_s:g} s; give an IP address") from None
    except (socket.gaierror, UnicodeError) as exc:
        raise BadInputError(f"--host {host!r} does not resolve ({exc}); give an IP address or a known name") from None
    finally:
        pool.shutdown(wait=False)
    return sorted({(int(info[0]), str(info[4][0])) for info in infos})


def check_ports(host: str, ports: dict[str, int | None]) -> None:
    """Refuse ports given twice, out of range, already in use on `host`, or a host this machine
    cannot bind (not one of its addresses). `ports`: option name -> port (None: not used)."""
    used = {name: port for name, port in ports.items() if port is not None}
    for name, port in used.items():
        if not 1 <= port <= 65535:
            raise BadInputError(f"{name} must be a TCP port 1..65535, got {port}")
    by_port: dict[int, list[str]] = {}
    for name, port in used.items():
        by_port.setdefault(port, []).append(name)
    for port, names in by_port.items():
        if len(names) > 1:
            raise BadInputError(f"{' and '.join(names)} are both {port}; each endpoint needs its own port")
    for family, address in resolve_host(host):
        for name, port in used.items():
            _try_bind(family, address, host, name, port)


def _try_bind(family: int, address: str, host: str, name: str, port: int) -> None:
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as servers do: TIME_WAIT is no conflict
        try:
            s.bind((address, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise BadInputError(f"{name} {port} is already in use on {host}; pick a free port") from None
            if exc.errno == errno.EADDRNOTAVAIL:
                raise BadInputError(
                    f"--host {host} ({address}) is not an address of this machine; use 127.0.0.1, 0.0.0.0 "
                    "or one of its interfaces"
                ) from None
            if exc.errno == errno.EACCES:
                raise BadInputError(f"{name} {port} needs privileges on this machine; use a port >= 1024") from None
            raise BadInputError(f"cannot bind {name} {port} on {host}: {exc.strerror}") from None
