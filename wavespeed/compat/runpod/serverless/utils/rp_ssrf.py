"""``runpod.serverless.utils.rp_ssrf``: fetching URLs from job input safely.

The same guard as every wavespeed download: http(s) only; the host is
resolved and refused if any answer is not a public address (loopback,
private, link-local and cloud metadata, CGNAT, reserved, multicast); the
connection goes to the address that was checked; every redirect is checked
again; a size cap (``RUNPOD_MAX_DOWNLOAD_BYTES``, 5 GiB by default).
``RUNPOD_ALLOW_PRIVATE_DOWNLOAD_URLS=true`` lifts the address check.
Proxies from the environment are not used (a proxy would resolve the name
itself), where runpod refuses a proxied URL.
"""

from collections.abc import Mapping
from typing import Any, Optional
from urllib.parse import urlsplit

from requests import PreparedRequest, Response
from requests.adapters import HTTPAdapter

from wavespeed.serverless.utils.download import (
    DownloadBlocked,
    allow_private,
    is_public_address,
    iter_content_capped,
    max_download_bytes,
    resolve_public,
    safe_get,
)

__all__ = [
    "SSRFError",
    "is_safe_address",
    "resolve_and_validate",
    "max_download_bytes",
    "iter_content_capped",
    "safe_get",
    "PinnedIPAdapter",
]

#: Raised when a URL is refused or a body is over the cap (a ``ValueError``).
SSRFError = DownloadBlocked


def is_safe_address(ip: str) -> bool:
    """True only for a globally routable unicast IP address (IPv4-mapped IPv6 unwrapped)."""
    return is_public_address(ip)


def resolve_and_validate(host: str, port: int) -> list[str]:
    """The addresses of ``host``.

    Raises ``SSRFError`` when it does not resolve or any address is not public.
    """
    try:
        return resolve_public(host, port)
    except DownloadBlocked:
        raise
    except Exception as exc:  # noqa: BLE001 - runpod reports a failed lookup as SSRFError too
        raise SSRFError(f"could not resolve host {host!r}: {exc}") from None


class PinnedIPAdapter(HTTPAdapter):
    """A requests adapter that connects to one pre-checked address.

    The URL's host still names the TLS server (SNI and certificate check)
    and the ``Host`` header; only the address dialled is fixed, so a second
    DNS answer cannot swap it. ``safe_get`` does this itself; the adapter is
    for code that mounts it on its own session.
    """

    def __init__(self, pinned_ip: str, **kwargs: Any) -> None:
        self.pinned_ip = pinned_ip
        super().__init__(**kwargs)

    def send(
        self,
        request: PreparedRequest,
        stream: bool = False,
        timeout: Any = None,
        verify: Any = True,
        cert: Any = None,
        proxies: Optional[Mapping[str, str]] = None,
    ) -> Response:
        parts = urlsplit(request.url or "")
        host = parts.hostname or ""
        shown = f"[{host}]" if ":" in host else host
        request.headers["Host"] = f"{shown}:{parts.port}" if parts.port else shown
        return super().send(
            request, stream=stream, timeout=timeout, verify=verify, cert=cert, proxies=proxies
        )

    def _pinned(self, pool: Any, url: str) -> Any:
        parts = urlsplit(url)
        if parts.scheme == "https":
            pool.assert_hostname = parts.hostname
            pool.conn_kw = dict(pool.conn_kw or {}, server_hostname=parts.hostname)
        pool.host = self.pinned_ip
        return pool

    def get_connection_with_tls_context(
        self, request: Any, verify: Any, proxies: Optional[Any] = None, cert: Optional[Any] = None
    ) -> Any:
        pool = super().get_connection_with_tls_context(request, verify, proxies=proxies, cert=cert)
        return self._pinned(pool, request.url)

    def get_connection(self, url: Any, proxies: Optional[Any] = None) -> Any:  # requests < 2.32
        pool = super().get_connection(url, proxies=proxies)
        return self._pinned(pool, url)


# Kept for code that checks the switch the way runpod names it.
def _ssrf_protection_enabled() -> bool:
    return not allow_private()
