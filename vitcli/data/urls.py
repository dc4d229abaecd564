"""Images from http(s) URLs: fetched with a timeout, a size limit and few redirects (standard library).

A URL that cannot be fetched (no answer, an HTTP error, too large, too many redirects) raises an
`ImageError` with the URL as its path, so it becomes an error record like an unreadable file; a body
that is not an image fails to decode the same way. Proxies from the environment (`https_proxy`) are
honoured, as urllib does.
"""

from __future__ import annotations

import urllib.error
import urllib.request

from vitcli import __version__
from vitcli.errors import ImageError

TIMEOUT_S = 20.0  # per connection and per read
DEADLINE_S = 60.0  # for the whole download: a server that drips a byte at a time cannot hold a run
CHUNK = 1 << 16
MAX_BYTES = 64 << 20  # 64 MiB: larger than any photo, smaller than a mistake
MAX_REDIRECTS = 3


def is_url(item: str) -> bool:
    return isinstance(item, str) and item.lower().startswith(("http://", "https://"))


class _FewRedirects(urllib.request.HTTPRedirectHandler):
    max_redirections = MAX_REDIRECTS

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        if not is_url(newurl):  # never follow a redirect to file:// or ftp://
            raise urllib.error.HTTPError(newurl, code, f"redirect to a non-http URL {newurl}", headers, fp)
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def _read(response, url: str, max_bytes: int, limit: float) -> bytes:
    """The body, chunk by chunk, within `limit` seconds and max_bytes + 1."""
    import time

    deadline = time.monotonic() + limit
    chunks, size = [], 0
    while size <= max_bytes:
        if time.monotonic() > deadline:
            raise ImageError(url, f"cannot fetch (the download took over {limit:g} s; {size:,} bytes came)")
        chunk = (
            response.read1(min(CHUNK, max_bytes + 1 - size))
            if hasattr(response, "read1")
            else response.read(min(CHUNK, max_bytes + 1 - size))
        )
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)


def fetch(url: str, timeout: float = TIMEOUT_S, max_bytes: int = MAX_BYTES, deadline_s: float | None = None) -> bytes:
    """The body of `url` within DEADLINE_S in all (after the connection), or ImageError(url, reason)."""
    opener = urllib.request.build_opener(_FewRedirects)
    request = urllib.request.Request(url, headers={"User-Agent": f"vitcli/{__version__}"})
    try:
        with opener.open(request, timeout=timeout) as response:
            declared = response.headers.get("Content-Length")
            if declared and declared.isdigit() and int(declared) > max_bytes:
                raise ImageError(url, f"{int(declared):,} bytes is over the limit of {max_bytes:,}")
            data = _read(response, url, max_bytes, DEADLINE_S if deadline_s is None else deadline_s)
    except ImageError:
        raise
    except urllib.error.HTTPError as e:
        reason = "too many redirects" if e.code in (301, 302, 303, 307, 308) else f"HTTP {e.code} {e.reason}"
        raise ImageError(url, f"cannot fetch ({reason})") from None
    except urllib.error.URLError as e:
        raise ImageError(url, f"cannot fetch ({getattr(e.reason, 'strerror', None) or e.reason})") from None
    except (OSError, ValueError) as e:  # timeouts, resets, bad URLs
        raise ImageError(url, f"cannot fetch ({type(e).__name__}: {e})") from None
    if len(data) > max_bytes:
        raise ImageError(url, f"the body is over the limit of {max_bytes:,} bytes")
    return data
