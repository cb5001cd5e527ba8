"""Webhooks: each job's final status document, POSTed to the URL its request named.

A webhook URL comes from whoever can call the API, so it is a way to make
this process send requests. Where the API is reachable from other machines
(realtime mode, or the local API bound to a non-loopback address), URLs that
resolve to loopback, private, link-local (cloud metadata), CGNAT or other
non-public addresses are refused, unless ``WAVESPEED_ALLOW_PRIVATE_WEBHOOKS``
says otherwise; the address checked is the address connected to. Redirects
are never followed, anywhere: a 3xx answer ends the delivery.
"""

import socket
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Optional
from urllib.parse import urlsplit

from ..logs import logger
from ..utils.download import is_public_address, pinned_pool

log = logger("api")

ALLOW_PRIVATE_ENV = "WAVESPEED_ALLOW_PRIVATE_WEBHOOKS"
RETRIED = frozenset({408, 429})  # and every 5xx


class WebhookRefused(ValueError):
    """The URL is malformed, or points where this API may not send requests."""


class Webhooks:
    """Posts final status documents on threads of its own; ``close()`` stops them.

    ``allow_private``: whether non-public addresses are allowed targets.
    ``encode`` turns a document into the bytes posted.
    """

    def __init__(
        self,
        *,
        allow_private: bool,
        encode: Callable[[Any], bytes],
        timeout: float = 10.0,
        attempts: int = 3,
        backoff: float = 0.5,
    ) -> None:
        self.allow_private = allow_private
        self._encode = encode
        self._timeout = timeout
        self._attempts = max(1, attempts)
        self._backoff = backoff
        self._pool = ThreadPoolExecutor(4, thread_name_prefix="wavespeed-webhook")
        self._closing = threading.Event()

    def check(self, url: str) -> None:
        """Raise WebhookRefused unless ``url`` is one this API may post to.

        A name that does not resolve now passes: delivery checks again, and
        a failed lookup then is a failed attempt.
        """
        _scheme, host, port = split_url(url)
        if self.allow_private:
            return
        try:
            self._addresses(host, port)
        except OSError:
            return

    def post_later(self, job_id: str, url: str, doc: dict[str, Any]) -> None:
        """Queue the POST of ``doc`` to ``url``; never blocks on the network."""
        try:
            self._pool.submit(self.send, job_id, url, doc)
        except RuntimeError:  # shutting down
            log.warning("webhook for job %s not sent: shutting down", job_id)

    def send(self, job_id: str, url: str, doc: dict[str, Any]) -> bool:
        """POST ``doc``, retrying connection errors, 408, 429 and 5xx; True when accepted."""
        import urllib3

        body = self._encode(doc)
        delay = self._backoff
        for attempt in range(1, self._attempts + 1):
            retry = True
            try:
                status = self._post(url, body)
            except WebhookRefused as exc:
                log.error("webhook for job %s not sent: %s", job_id, exc)
                return False
            except (OSError, urllib3.exceptions.HTTPError) as exc:
                problem = f"{type(exc).__name__}: {exc}"
            else:
                if 200 <= status < 300:
                    log.info("webhook for job %s delivered", job_id)
                    return True
                problem = f"HTTP {status}"
                if 300 <= status < 400:
                    problem += ": redirects are not followed"
                retry = status in RETRIED or status >= 500
            if retry and attempt < self._attempts:
                log.warning(
                    "webhook for job %s: attempt %d failed (%s); retrying", job_id, attempt, problem
                )
                if self._closing.wait(delay):
                    break
                delay *= 2
            else:
                log.error("webhook for job %s not delivered (%s)", job_id, problem)
                return False
        log.error("webhook for job %s not delivered: shutting down", job_id)
        return False

    def close(self, wait: bool = True) -> None:
        """Stop retrying; with ``wait``, let the POSTs under way end (each has a timeout)."""
        self._closing.set()
        self._pool.shutdown(wait=wait)

    # -- one attempt ----------------------------------------------------------------

    def _addresses(self, host: str, port: int) -> list[str]:
        """The host's addresses; WebhookRefused when one is not public (and that is not allowed)."""
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        addresses: list[str] = []
        for info in infos:
            address = str(info[4][0])
            if address not in addresses:
                addresses.append(address)
        if not self.allow_private:
            for address in addresses:
                # One bad answer is enough: a name resolving to both kinds is hostile.
                if not is_public_address(address):
                    raise WebhookRefused(
                        f"{host} resolves to the non-public address {address}; webhooks to "
                        "loopback, private and link-local addresses are refused where the API "
                        "is reachable from other machines "
                        f"(set {ALLOW_PRIVATE_ENV}=true to allow them)"
                    )
        return addresses

    def _post(self, url: str, body: bytes) -> int:
        """One POST to the checked address; returns the status (redirects are answers)."""
        import urllib3

        from ... import __version__

        scheme, host, port = split_url(url)
        parts = urlsplit(url)
        headers = {
            "Content-Type": "application/json",
            "User-Agent": f"wavespeed/{__version__}",
            "Host": _authority(host, port, scheme),
        }
        if parts.username is not None:  # http://user:pass@host/ means basic auth, as in requests
            credentials = f"{parts.username}:{parts.password or ''}"
            headers.update(urllib3.util.make_headers(basic_auth=credentials))
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        timeout = urllib3.Timeout(connect=self._timeout, read=self._timeout)
        problem: Optional[BaseException] = None
        for address in self._addresses(host, port):
            pool = pinned_pool(scheme, host, address, port, timeout)
            try:
                response = pool.urlopen(
                    "POST",
                    target,
                    body=body,
                    headers=headers,
                    redirect=False,
                    retries=False,
                    assert_same_host=False,
                )
                return int(response.status)
            except (
                urllib3.exceptions.NewConnectionError,
                urllib3.exceptions.ConnectTimeoutError,
            ) as exc:
                problem = exc  # try the host's next address (say, IPv4 after IPv6)
            finally:
                pool.close()
        raise ConnectionError(f"cannot connect to {host}: {problem}")


def split_url(url: str) -> tuple[str, str, int]:
    """``(scheme, host, port)`` of an http(s) URL; WebhookRefused when it is not one."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise WebhookRefused(f"{url!r} is not a valid URL: {exc}") from None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https") or not parts.hostname:
        raise WebhookRefused(f"{url!r} is not an http(s) URL with a host")
    return scheme, parts.hostname, port or (443 if scheme == "https" else 80)


def _authority(host: str, port: int, scheme: str) -> str:
    shown = f"[{host}]" if ":" in host else host
    return shown if port == (443 if scheme == "https" else 80) else f"{shown}:{port}"
