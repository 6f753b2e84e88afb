"""What a browser user may make the server read: the operator's data roots and public http(s) URLs.

The app is a server many people share, so text typed into a field (the COG URL, the Export page's
scene) must not reach the server's own files or hosts on its network unless the operator allowed
it. The operator configures this with environment variables:

* ``REFINER_DATA_ROOTS``: folders (``os.pathsep``-separated) under which local paths may be read;
  none by default, so every local path and every GDAL ``/vsi…`` path is refused.
* ``REFINER_ALLOW_PRIVATE_HOSTS``: ``1`` lets URLs reach loopback, private and link-local hosts
  (a lab's own file server); off by default.

Refusals say the same thing whether or not a path exists, so they reveal nothing about the disk.
"""

from __future__ import annotations

import ipaddress
import os
import socket
from pathlib import Path
from urllib.parse import urlsplit

ROOTS_ENV = "REFINER_DATA_ROOTS"
PRIVATE_ENV = "REFINER_ALLOW_PRIVATE_HOSTS"


def data_roots() -> list[Path]:
    """The operator's data roots (resolved), from ``$REFINER_DATA_ROOTS``; empty when unset."""
    raw = os.environ.get(ROOTS_ENV, "")
    return [Path(p).expanduser().resolve() for p in raw.split(os.pathsep) if p.strip()]


def private_hosts_allowed() -> bool:
    """Whether the operator lets URLs reach private and local hosts (``$REFINER_ALLOW_PRIVATE_HOSTS``; off)."""
    return os.environ.get(PRIVATE_ENV, "").strip().lower() in {"1", "true", "yes"}


def _refuse_path(can_upload: bool = True) -> ValueError:
    roots = data_roots()
    upload = ", or upload the file" if can_upload else ""  # the scene form has no uploader to point at
    where = (
        "a file under the server's data folders (" + ", ".join(str(r) for r in roots) + ")"
        if roots
        else f"an http(s) URL{upload} (the operator allows no server paths here)"
    )
    return ValueError(f"this location cannot be read from the browser — give {where}")


def check_url(url: str) -> str:
    """``url`` if it is http(s) to a public host (every address the name resolves to is checked)."""
    parts = urlsplit(url)
    if parts.scheme not in {"http", "https"} or not parts.hostname:
        raise ValueError("only http:// and https:// URLs can be read — give a URL like https://host/image.tif")
    if private_hosts_allowed():
        return url
    try:
        infos = socket.getaddrinfo(parts.hostname, parts.port or 443, proto=socket.IPPROTO_TCP)
    except (socket.gaierror, UnicodeError, ValueError) as exc:
        raise ValueError(f"the host {parts.hostname!r} cannot be found — check the URL") from exc
    for info in infos:
        addr = ipaddress.ip_address(str(info[4][0]).split("%", 1)[0])  # an IPv4/IPv6 host string for TCP
        if not addr.is_global or addr.is_multicast:
            raise ValueError(
                f"the host {parts.hostname!r} is on a private, loopback or link-local network, which the "
                "server does not fetch from — use a public URL (the operator can allow private hosts)"
            )
    return url


def check_source(text: str, extra_roots: tuple[Path, ...] = (), *, can_upload: bool = True) -> str:
    """A source typed in the browser, made safe to hand to GDAL, or a ``ValueError`` saying why not.

    URLs must pass :func:`check_url`; local paths must lie (after resolving links and ``..``)
    under a data root (or one of ``extra_roots``, e.g. the shipped assets); GDAL virtual paths
    (``/vsicurl/``, ``/vsizip/``...) are always refused: they reach files or hosts behind these checks.
    ``can_upload``: whether the page beside the field has an uploader the refusal may suggest.
    """
    text = text.strip()
    if not text:
        raise ValueError("no location given — type a URL or a path under the server's data folders")
    if text.lower().startswith("vsi") or "/vsi" in text.lower():
        raise _refuse_path(can_upload)
    if "://" in text:
        return check_url(text)
    p = Path(text).expanduser()
    if not p.is_absolute():
        raise _refuse_path(can_upload)
    resolved = p.resolve()
    for root in [*data_roots(), *(r.resolve() for r in extra_roots)]:
        if resolved == root or root in resolved.parents:
            return str(resolved)
    raise _refuse_path(can_upload)
