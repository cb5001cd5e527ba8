"""Download the files a job's input points at: safely, streamed, bounded.

``download_file(url)`` (runpod's ``rp_download.file``) saves one URL under
``./job_files/`` and extracts a ``.zip``; ``download_files_from_urls(job_id,
urls)`` saves several in parallel under ``./jobs/<job_id>/downloaded_files/`` (the
job id reduced to one safe folder name).

Job input is untrusted, so every download:

- accepts only ``http`` and ``https``;
- resolves the host itself and refuses private, loopback, link-local
  (cloud metadata at 169.254.169.254), CGNAT, multicast and reserved
  addresses, then connects to the address it checked (a second DNS answer
  cannot swap it); each redirect (at most 5) is checked the same way.
  ``RUNPOD_ALLOW_PRIVATE_DOWNLOAD_URLS=true`` lifts this for workers that
  fetch from their own network;
- is streamed to disk, never held in memory, and stops past a size cap
  (``RUNPOD_MAX_DOWNLOAD_BYTES`` or ``WAVESPEED_MAX_DOWNLOAD_BYTES``,
  default 5 GiB; the same cap bounds what a zip may extract to, and a zip
  may hold at most ``WAVESPEED_MAX_ZIP_ENTRIES`` entries, default 10,000);
- retries connection errors, timeouts, 429 and 5xx answers (3 tries);
- connects directly: ``HTTP(S)_PROXY`` is not used, since a proxy would
  resolve the host itself and defeat the address check.

A refused URL or an oversized body raises ``DownloadRefused`` /
``DownloadTooLarge`` (both ``DownloadBlocked``, a ``ValueError``, runpod's
``SSRFError``); other failures raise ``DownloadError`` from
``download_file`` and become ``None`` entries in
``download_files_from_urls``. Every one of them is a ``DownloadError`` and a
``requests.RequestException``, so ``except RequestException`` written for
runpod still catches them.

``safe_get(url)`` is the same guard for code that wants a streamed
``requests.Response`` (runpod's ``rp_ssrf.safe_get``).

Over 400 lines on purpose: the SSRF guard, the pinned connections, the
redirect walk and the bounded writers are one security boundary, read and
reviewed as a whole.
"""

import hashlib
import ipaddress
import os
import re
import shutil
import socket
import time
import uuid
import zipfile
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Optional, Union
from urllib.parse import unquote, urljoin, urlsplit

import requests

from ..errors import WavespeedError
from ..logs import logger

__all__ = [
    "download_file",
    "file",
    "download_files_from_urls",
    "DownloadError",
    "DownloadBlocked",
    "DownloadRefused",
    "DownloadTooLarge",
    "UnsafeArchive",
    "is_public_address",
    "resolve_public",
    "allow_private",
    "max_download_bytes",
    "safe_get",
    "iter_content_capped",
    "ALLOW_PRIVATE_ENV",
]

log = logger("utils.download")

ALLOW_PRIVATE_ENV = "RUNPOD_ALLOW_PRIVATE_DOWNLOAD_URLS"
MAX_BYTES_ENVS = ("WAVESPEED_MAX_DOWNLOAD_BYTES", "RUNPOD_MAX_DOWNLOAD_BYTES")
DEFAULT_MAX_BYTES = 5 * 1024**3
MAX_ZIP_ENTRIES_ENV = "WAVESPEED_MAX_ZIP_ENTRIES"
DEFAULT_MAX_ZIP_ENTRIES = 10_000  # a 2.5 MB zip can hold 30,000 empty files
MAX_REDIRECTS = 5
ATTEMPTS = 3
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_CHUNK = 1024 * 1024
# Shared address space (RFC 6598): not "private" to ipaddress before 3.12.4.
_CGNAT = ipaddress.ip_network("100.64.0.0/10")
_SAFE_EXT = re.compile(r"^\.[A-Za-z0-9_-]{1,16}$")
_UNSAFE_ID_CHARS = re.compile(r"[^A-Za-z0-9._-]")


class DownloadError(WavespeedError, requests.RequestException):
    """A download failed (after its retries).

    Also a ``requests.RequestException``: code written for runpod's
    ``rp_download`` catches it as such.
    """

    def __init__(self, message: str, url: str = "", status: Optional[int] = None) -> None:
        self.url = url
        self.status = status
        super().__init__(message)


class DownloadBlocked(DownloadError, ValueError):
    """A safety rule stopped the download (never retried); runpod's ``SSRFError``."""


class DownloadRefused(DownloadBlocked):
    """The URL points somewhere a job may not send the worker."""


class DownloadTooLarge(DownloadBlocked):
    """The body (or a zip's content) is larger than the size cap."""


class UnsafeArchive(DownloadBlocked):
    """A zip entry would land outside its extraction folder, or is a link."""


class _Retryable(Exception):
    """One attempt failed in a way worth another try."""


def allow_private(environ: Optional[Mapping[str, str]] = None) -> bool:
    """True when ``RUNPOD_ALLOW_PRIVATE_DOWNLOAD_URLS`` lifts the address check."""
    value = (environ if environ is not None else os.environ).get(ALLOW_PRIVATE_ENV, "")
    return value.strip().lower() in ("1", "true", "yes", "on")


def max_download_bytes(environ: Optional[Mapping[str, str]] = None) -> int:
    """The size cap of one download (and of what a zip may extract to), in bytes."""
    env = environ if environ is not None else os.environ
    for name in MAX_BYTES_ENVS:
        raw = env.get(name)
        if raw:
            try:
                value = int(raw)
            except ValueError:
                log.warning("%s=%r is not a number of bytes; using the default", name, raw)
                continue
            if value > 0:
                return value
    return DEFAULT_MAX_BYTES


def _max_zip_entries(environ: Optional[Mapping[str, str]] = None) -> int:
    raw = (environ if environ is not None else os.environ).get(MAX_ZIP_ENTRIES_ENV)
    if raw:
        try:
            value = int(raw)
        except ValueError:
            log.warning("%s=%r is not a number; using the default", MAX_ZIP_ENTRIES_ENV, raw)
        else:
            if value > 0:
                return value
    return DEFAULT_MAX_ZIP_ENTRIES


def is_public_address(address: str) -> bool:
    """True only for a globally routable unicast IP address."""
    try:
        ip: Any = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return False
    mapped = getattr(ip, "ipv4_mapped", None)
    if mapped is not None:  # ::ffff:10.0.0.1 is 10.0.0.1
        ip = mapped
    if ip.version == 4 and ip in _CGNAT:
        return False
    if (
        ip.is_private
        or ip.is_loopback
        or ip.is_link_local
        or ip.is_multicast
        or ip.is_reserved
        or ip.is_unspecified
    ):
        return False
    return bool(ip.is_global)


def resolve_public(host: str, port: int, url: str = "") -> list[str]:
    """The addresses ``host`` resolves to, refusing them all if any is not public.

    Raises ``DownloadRefused`` for a non-public answer (unless private
    addresses are allowed) and ``DownloadError`` when the name does not
    resolve.
    """
    try:
        return _resolve(host, port, url or host)
    except _Retryable as exc:
        raise DownloadError(str(exc), url or host) from None


def _resolve(host: str, port: int, url: str) -> list[str]:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise _Retryable(f"cannot resolve {host!r}: {exc}") from exc
    addresses: list[str] = []
    for info in infos:
        address = str(info[4][0])
        if address not in addresses:
            addresses.append(address)
    if not addresses:
        raise _Retryable(f"{host!r} resolves to no address")
    if not allow_private():
        for address in addresses:
            # One bad answer is enough: a name resolving to both kinds is hostile.
            if not is_public_address(address):
                raise DownloadRefused(
                    f"refusing to download {url}: {host} resolves to the non-public address "
                    f"{address} (set {ALLOW_PRIVATE_ENV}=true to allow private addresses)",
                    url,
                )
    return addresses


def _ca_bundle() -> Optional[str]:
    try:
        import certifi  # installed with requests

        return str(certifi.where())
    except ImportError:  # pragma: no cover - the system store is used then
        return None


def _authority(host: str, port: int, scheme: str) -> str:
    shown = f"[{host}]" if ":" in host else host
    default = 443 if scheme == "https" else 80
    return shown if port == default else f"{shown}:{port}"


def pinned_pool(scheme: str, host: str, address: str, port: int, timeout: Any) -> Any:
    """A one-connection urllib3 pool to ``address`` that speaks to ``host``.

    It connects to the address that was checked, not to whatever a second
    DNS lookup returns; for https the certificate is still checked against
    ``host``. Also used for the local API's webhooks.
    """
    import urllib3

    if scheme == "https":
        return urllib3.HTTPSConnectionPool(
            address,
            port,
            timeout=timeout,
            retries=False,
            maxsize=1,
            cert_reqs="CERT_REQUIRED",
            ca_certs=_ca_bundle(),
            assert_hostname=host,
            server_hostname=host,
        )
    return urllib3.HTTPConnectionPool(address, port, timeout=timeout, retries=False, maxsize=1)


def _open(
    url: str,
    timeout: tuple[float, float],
    headers: Mapping[str, str],
    max_redirects: int = MAX_REDIRECTS,
) -> tuple[Any, Any, str]:
    """GET ``url``, following redirects, each hop checked and pinned to its address.

    Returns ``(response, pool, final_url)``; the caller reads and closes both.
    """
    import urllib3

    current = url
    for _hop in range(max_redirects + 1):
        parts = urlsplit(current)
        scheme = parts.scheme.lower()
        if scheme not in ("http", "https"):
            raise DownloadRefused(
                f"refusing to download {current!r}: only http and https URLs", url
            )
        host = parts.hostname
        try:
            port = parts.port or (443 if scheme == "https" else 80)
        except ValueError as exc:
            raise DownloadRefused(f"refusing to download {current!r}: {exc}", url) from None
        if not host:
            raise DownloadRefused(f"refusing to download {current!r}: the URL has no host", url)
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        request_headers = dict(headers)
        request_headers["Host"] = _authority(host, port, scheme)
        pool_timeout = urllib3.Timeout(connect=timeout[0], read=timeout[1])
        last_error: Optional[BaseException] = None
        response: Any = None
        pool: Any = None
        for address in _resolve(host, port, url):
            pool = pinned_pool(scheme, host, address, port, pool_timeout)
            try:
                response = pool.urlopen(
                    "GET",
                    target,
                    headers=request_headers,
                    redirect=False,
                    retries=False,
                    preload_content=False,
                    assert_same_host=False,
                )
                break
            except (
                urllib3.exceptions.NewConnectionError,
                urllib3.exceptions.ConnectTimeoutError,
            ) as exc:
                pool.close()
                last_error = exc  # try the host's next address (say, IPv4 after IPv6)
        if response is None:
            raise _Retryable(f"cannot connect to {host}: {last_error}")
        if response.status in _REDIRECTS:
            location = response.headers.get("Location")
            response.release_conn()
            pool.close()
            if not location:
                raise DownloadError(
                    f"{current} redirected without a Location", url, response.status
                )
            current = urljoin(current, location)
            continue
        return response, pool, current
    raise DownloadRefused(f"refusing to download {url}: more than {max_redirects} redirects", url)


def _fetch(
    url: str,
    destination: str,
    *,
    timeout: tuple[float, float] = (10.0, 30.0),
    max_bytes: Optional[int] = None,
    attempts: int = ATTEMPTS,
) -> dict[str, Any]:
    """Stream ``url`` into ``destination``; returns the response's headers and final URL."""
    import urllib3

    from ... import __version__

    cap = max_bytes if max_bytes is not None else max_download_bytes()
    headers = {"User-Agent": f"wavespeed/{__version__}", "Accept-Encoding": "identity"}
    partial = destination + ".part"
    delay = 0.25
    for attempt in range(1, attempts + 1):
        response = pool = None
        try:
            response, pool, final_url = _open(url, timeout, headers)
            status = response.status
            if status == 429 or status >= 500:
                raise _Retryable(f"HTTP {status}")
            if status >= 400:
                raise DownloadError(f"downloading {url} failed: HTTP {status}", url, status)
            declared = response.headers.get("Content-Length")
            if declared and declared.isdigit() and int(declared) > cap:
                raise DownloadTooLarge(
                    f"{url} is {int(declared)} bytes, over the download cap of {cap} bytes", url
                )
            written = 0
            with open(partial, "wb") as out:
                for chunk in response.stream(_CHUNK, decode_content=False):
                    written += len(chunk)
                    if written > cap:
                        raise DownloadTooLarge(
                            f"{url} is larger than the download cap of {cap} bytes", url
                        )
                    out.write(chunk)
            os.replace(partial, destination)
            return {
                "final_url": final_url,
                "content_disposition": response.headers.get("Content-Disposition", ""),
                "content_type": response.headers.get("Content-Type", ""),
                "size": written,
            }
        except DownloadError:
            # Ours, and an OSError too (requests' base class): final, not retried here.
            _remove(partial)
            raise
        except (_Retryable, urllib3.exceptions.HTTPError, OSError) as exc:
            _remove(partial)
            if attempt == attempts:
                raise DownloadError(
                    f"downloading {url} failed after {attempts} tries: {exc}", url
                ) from exc
            log.debug("download of %s failed (%s); retrying", url, exc)
            time.sleep(delay)
            delay *= 2
        except BaseException:
            _remove(partial)
            raise
        finally:
            if response is not None:
                response.release_conn()
            if pool is not None:
                pool.close()
    # Not reached: the loop returns or raises.
    raise DownloadError(f"downloading {url} failed", url)  # pragma: no cover


def _remove(path: str) -> None:
    try:
        os.remove(path)
    except OSError:
        pass


def _disposition_name(header: str) -> str:
    """The file name a Content-Disposition header gives (``filename*`` preferred)."""
    params: dict[str, str] = {}
    for part in header.split(";"):
        if "=" in part:
            key, value = part.split("=", 1)
            params[key.strip().lower()] = value.strip().strip('"')
    extended = params.get("filename*")
    if extended:
        # RFC 5987: charset'language'percent-encoded
        pieces = extended.split("'", 2)
        if len(pieces) == 3:
            try:
                return unquote(pieces[2], encoding=pieces[0] or "utf-8")
            except LookupError:
                return unquote(pieces[2])
        return unquote(extended)
    return params.get("filename", "")


def _safe_name(name: str) -> str:
    # A remote name is only ever a label: keep its last path component.
    name = name.replace("\\", "/").rsplit("/", 1)[-1].replace("\x00", "")
    return "" if name in (".", "..") else name


def _extension(name: str) -> str:
    ext = os.path.splitext(name)[1]
    return ext if _SAFE_EXT.match(ext) else ""


def _extract_zip(archive: str, folder: str, cap: int, max_entries: int) -> None:
    """Extract ``archive`` into ``folder``; refuse entries escaping it, links and zip bombs."""
    base = os.path.realpath(folder)
    with zipfile.ZipFile(archive) as zf:
        members = zf.infolist()
        if len(members) > max_entries:
            raise DownloadTooLarge(
                f"the zip has {len(members)} entries, over the limit of {max_entries} "
                f"(set {MAX_ZIP_ENTRIES_ENV} to change it)"
            )
        declared = 0
        plan: list[tuple[zipfile.ZipInfo, str]] = []
        for info in members:
            name = info.filename
            mode = (info.external_attr >> 16) & 0o170000
            if mode == 0o120000:
                raise UnsafeArchive(f"zip entry {name!r} is a symbolic link")
            target = os.path.realpath(os.path.join(base, name))
            if os.path.isabs(name) or not (target == base or target.startswith(base + os.sep)):
                raise UnsafeArchive(f"zip entry {name!r} would be written outside {folder}")
            declared += info.file_size
            if declared > cap:
                raise DownloadTooLarge(f"the zip would extract to more than {cap} bytes")
            plan.append((info, target))
        total = 0
        for info, target in plan:
            if info.is_dir():
                os.makedirs(target, exist_ok=True)
                continue
            os.makedirs(os.path.dirname(target), exist_ok=True)
            with zf.open(info) as source, open(target, "wb") as out:
                while True:
                    chunk = source.read(_CHUNK)
                    if not chunk:
                        break
                    total += len(chunk)  # the sizes in the header may lie
                    if total > cap:
                        raise DownloadTooLarge(f"the zip extracts to more than {cap} bytes")
                    out.write(chunk)


def download_file(
    url: str, *, folder: str = "job_files", max_zip_entries: Optional[int] = None
) -> dict[str, Optional[str]]:
    """Download one file into ``folder`` (``./job_files``) under a random name.

    A ``.zip`` is extracted when it holds at most ``max_zip_entries`` entries
    (default ``WAVESPEED_MAX_ZIP_ENTRIES``, else 10,000) and its content fits
    the size cap. Returns ``{"file_path", "type", "original_name", "extracted_path"}``:
    the absolute path, the extension without its dot, the name the server
    or URL gave, and for a ``.zip`` the absolute folder it was extracted to
    (else None). Raises ``DownloadError`` (or a subclass) on failure.
    """
    os.makedirs(folder, exist_ok=True)
    stem = uuid.uuid4().hex
    scratch = os.path.join(folder, stem + ".download")
    try:
        info = _fetch(url, scratch)
    except BaseException:
        _remove(scratch)
        raise
    original = _safe_name(_disposition_name(info["content_disposition"]))
    if not original:
        original = _safe_name(unquote(urlsplit(url).path)) or _safe_name(
            unquote(urlsplit(info["final_url"]).path)
        )
    file_type = _extension(original)[1:]
    path = os.path.join(folder, f"{stem}.{file_type}" if file_type else stem)
    os.replace(scratch, path)
    extracted: Optional[str] = None
    if file_type.lower() == "zip":
        target = os.path.join(folder, stem)
        os.makedirs(target, exist_ok=True)
        try:
            entries = max_zip_entries if max_zip_entries is not None else _max_zip_entries()
            _extract_zip(path, target, max_download_bytes(), entries)
        except zipfile.BadZipFile as exc:
            shutil.rmtree(target, ignore_errors=True)
            raise DownloadError(f"{url} is not a valid zip file: {exc}", url) from exc
        except BaseException:
            shutil.rmtree(target, ignore_errors=True)
            raise
        extracted = os.path.abspath(target)
    return {
        "file_path": os.path.abspath(path),
        "type": file_type,
        "original_name": original,
        "extracted_path": extracted,
    }


def _job_folder(job_id: Any) -> str:
    """``job_id`` as one safe folder name: job ids come from the platform or a caller.

    Common ids (letters, digits, ``-``, ``_``, ``.``) are kept; anything else
    (``../x``, ``/abs``, separators, control characters) is replaced, and a
    hash of the original keeps two different ids in two different folders.
    """
    text = str(job_id)
    name = _UNSAFE_ID_CHARS.sub("_", text)[:100].lstrip(".")
    if name == text and name:
        return name
    digest = hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:12]
    return f"{name or 'job'}-{digest}"


#: runpod's name for ``download_file``.
file = download_file


def download_files_from_urls(
    job_id: str, urls: Union[str, Sequence[Optional[str]], None]
) -> list[Optional[str]]:
    """Download each URL into ``./jobs/<job_id>/downloaded_files/``, in parallel.

    Returns one absolute path per URL, in order; a ``None`` URL gives
    ``None``, and so does a download that failed after its retries (logged).
    A refused URL or an oversized file raises.
    """
    if urls is None:
        return [None]
    items: list[Optional[str]] = [urls] if isinstance(urls, str) else list(urls)
    folder = os.path.abspath(os.path.join("jobs", _job_folder(job_id), "downloaded_files"))
    os.makedirs(folder, exist_ok=True)

    def one(url: Optional[str]) -> Optional[str]:
        if url is None:
            return None
        base = os.path.join(folder, uuid.uuid4().hex)
        try:
            info = _fetch(url, base)
        except (DownloadRefused, DownloadTooLarge):
            raise
        except DownloadError as exc:
            log.error("%s", exc, extra={"job_id": job_id})
            return None
        ext = _extension(_safe_name(_disposition_name(info["content_disposition"])))
        if not ext:
            ext = _extension(_safe_name(unquote(urlsplit(url).path)))
        if ext:
            os.replace(base, base + ext)
        return base + ext

    if len(items) <= 1:
        return [one(u) for u in items]
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(
        max_workers=min(8, len(items)), thread_name_prefix="wavespeed-dl"
    ) as pool:
        return list(pool.map(one, items))


def safe_get(
    url: str,
    *,
    stream: bool = True,
    timeout: float = 30,
    headers: Optional[Mapping[str, str]] = None,
    max_bytes: Optional[int] = None,
    max_redirects: int = MAX_REDIRECTS,
) -> requests.Response:
    """GET a URL from job input under the download guard; a ``requests.Response``.

    The same rules as every download here: http(s) only, public addresses
    only (checked after DNS, pinned, and again at each redirect), a size cap
    on a declared ``Content-Length`` (read the body with
    ``iter_content_capped`` to hold a lying server to it). One try, no
    retries. Raises ``DownloadRefused`` / ``DownloadTooLarge`` (runpod's
    ``SSRFError``) or ``requests.ConnectionError``. Close the response (or
    use it in a ``with``) when done.
    """
    from ... import __version__

    cap = max_bytes if max_bytes is not None else max_download_bytes()
    request_headers = {"User-Agent": f"wavespeed/{__version__}", "Accept-Encoding": "identity"}
    request_headers.update(headers or {})
    try:
        raw, pool, final_url = _open(
            url, (float(timeout), float(timeout)), request_headers, max_redirects
        )
    except _Retryable as exc:
        raise requests.ConnectionError(str(exc)) from None
    adapter = requests.adapters.HTTPAdapter()
    prepared = requests.Request("GET", final_url, headers=request_headers).prepare()
    response = adapter.build_response(prepared, raw)
    close_response = response.close

    def close() -> None:
        # The pool was made for this one request: closing the response closes it too.
        try:
            close_response()
        finally:
            pool.close()
            # types-requests leaves HTTPAdapter.close unannotated.
            adapter.close()  # type: ignore[no-untyped-call]

    response.close = close  # type: ignore[method-assign]
    declared = response.headers.get("Content-Length", "")
    if declared.isdigit() and int(declared) > cap:
        response.close()
        raise DownloadTooLarge(
            f"{url} is {int(declared)} bytes, over the download cap of {cap} bytes", url
        )
    if not stream:
        try:
            body = b"".join(iter_content_capped(response, _CHUNK, cap))
        finally:
            response.close()
        response._content = body  # what requests itself sets once a body is read
        # requests' own flag, missing from its stubs.
        response._content_consumed = True  # type: ignore[attr-defined]
    return response


def iter_content_capped(
    response: Any, chunk_size: int, max_bytes: Optional[int]
) -> Iterator[bytes]:
    """The body of ``response`` in chunks.

    Closes the response and raises ``DownloadTooLarge`` past ``max_bytes``.
    """
    total = 0
    for chunk in response.iter_content(chunk_size=chunk_size):
        if not chunk:
            continue
        total += len(chunk)
        if max_bytes is not None and total > max_bytes:
            response.close()
            what = getattr(response, "url", "the body")
            raise DownloadTooLarge(f"{what} is larger than the cap of {max_bytes} bytes")
        yield chunk
