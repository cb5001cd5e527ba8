"""http.client's response object, reading its header block without the email parser.

``http.client`` hands every response's header lines to ``email.parser``,
which builds a feed parser, a line buffer and a policy per call: about
15-20 µs per response here, a tenth of a job's whole cost in the worker at
concurrency 1 and more on the stream path (one POST per chunk). The
worker's platform answers are a few plain ``Name: value`` lines, so
``Response.begin`` reads them itself into the same ``HTTPMessage`` the
email parser would have built (compat32's rules: the value loses leading
blanks and the line end, nothing else).

Anything else in a header block (a folded continuation line, a line
without a colon, a name with a space or a control character, a lone CR
inside a line) goes to the email parser exactly as ``http.client`` would
send it, so odd answers read the same as before. The limits are
``http.client``'s: 65,536 bytes a line, 100 lines.

``exchange.exchange`` reads every hot-path answer with ``Response``, and
the connections of ``connections.TrackedAdapter``'s pools use it as their
``response_class``; the rest of the process, including the user's own
``http.client``, is untouched.
"""

import email.parser
import http.client
import re
from typing import Any

MAX_LINE = 65536  # http.client's _MAXLINE
MAX_HEADERS = 100  # http.client's _MAXHEADERS
_END = (b"\r\n", b"\n", b"")
# A field name the email parser reads as one: printable ASCII, no colon.
_plain_name = re.compile(r"[\x21-\x39\x3b-\x7e]+").fullmatch


def read_header_lines(fp: Any) -> list[bytes]:
    """The raw lines of a header block, up to and without the blank line that ends it."""
    lines: list[bytes] = []
    while True:
        line = fp.readline(MAX_LINE + 1)
        if len(line) > MAX_LINE:
            raise http.client.LineTooLong("header line")
        if line in _END:
            return lines
        lines.append(line)
        if len(lines) > MAX_HEADERS:
            raise http.client.HTTPException(f"got more than {MAX_HEADERS} headers")


def parse_header_lines(lines: list[bytes]) -> http.client.HTTPMessage:
    """The ``HTTPMessage`` ``http.client.parse_headers`` makes of these lines."""
    message = http.client.HTTPMessage()
    for line in lines:
        name, colon, value = line.decode("iso-8859-1").partition(":")
        value = value.lstrip(" \t").rstrip("\r\n")
        if not colon or not _plain_name(name) or "\r" in value:
            return _email_parse(lines)  # (the email parser ends a line at a lone CR too)
        message.set_raw(name, value)
    return message


def _email_parse(lines: list[bytes]) -> http.client.HTTPMessage:
    text = b"".join(lines).decode("iso-8859-1") + "\r\n"  # http.client passes the blank line too
    parser = email.parser.Parser(_class=http.client.HTTPMessage)
    message: http.client.HTTPMessage = parser.parsestr(text)
    return message


class Response(http.client.HTTPResponse):
    """``http.client.HTTPResponse`` with ``begin()`` reading headers through the fast path.

    The rest of ``begin()`` is ``http.client``'s own logic: skip 100
    Continue answers, the HTTP version, chunked transfer, Content-Length
    and whether the connection stays open.
    """

    def begin(self) -> None:
        if self.headers is not None:
            return  # already begun
        while True:
            version, status, reason = self._read_status()
            if status != http.client.CONTINUE:
                break
            read_header_lines(self.fp)  # a 100 Continue's headers mean nothing here
        self.code = self.status = status
        self.reason = reason.strip()
        if version in ("HTTP/1.0", "HTTP/0.9"):
            self.version = 10
        elif version.startswith("HTTP/1."):
            self.version = 11
        else:
            raise http.client.UnknownProtocol(version)
        self.headers = self.msg = parse_header_lines(read_header_lines(self.fp))

        coding = self.headers.get("transfer-encoding")
        self.chunked = bool(coding) and coding.lower() == "chunked"
        if self.chunked:
            self.chunk_left = None
        self.will_close = self._check_close()
        self.length = None
        length = self.headers.get("content-length")
        if length and not self.chunked:
            try:
                self.length = int(length)
            except ValueError:
                pass
            else:
                if self.length < 0:
                    self.length = None
        if status in (http.client.NO_CONTENT, http.client.NOT_MODIFIED) or 100 <= status < 200:
            self.length = 0
        elif self._method == "HEAD":
            self.length = 0
        if not self.will_close and not self.chunked and self.length is None:
            self.will_close = True
