"""HTTP(S) transfers for the registries, with the standard library only (urllib): no extra dependency.

- `fetch(url, dest, sha256=..., size=...)`: download to `dest` through `dest.part`, resuming a `.part` left
  by a cut connection or an interrupted run with an HTTP Range request (a server that ignores Range makes
  it start over), retrying transient failures, then checking size and hash. A file that does not match
  is refused and deleted (a bad `.part` never lingers to be resumed).
- `read_url(url)`: a small file (a registry's index.json).
- `put_file(url, path)` / `put_bytes(url, data)`: HTTP PUT (a team registry's upload).

Every request sends `TLKIT_REGISTRY_AUTH` (when set) as its Authorization header, for servers that need one.
"""

from __future__ import annotations

import http.client
import os
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

from tlkit import __version__
from tlkit.errors import ChecksumError, RegistryError
from tlkit.io import file_digest

CHUNK = 1 << 20
RETRIES = 3
RETRY_WAIT_S = 0.5  # times the attempt number
TIMEOUT_S = 60
# HTTP statuses worth retrying (server busy / gateway trouble); other 4xx/5xx are final
_TRANSIENT = {408, 429, 500, 502, 503, 504}

Progress = Callable[[int, "int | None"], None]  # (bytes so far, total bytes or None)


def _headers(extra: dict[str, str] | None = None) -> dict[str, str]:
    h = {"User-Agent": f"tlkit/{__version__}"}
    auth = os.environ.get("TLKIT_REGISTRY_AUTH")
    if auth:
        h["Authorization"] = auth
    h.update(extra or {})
    return h


def _http_error(url: str, err: urllib.error.HTTPError) -> RegistryError:
    return RegistryError(f"{url}: HTTP {err.code} {err.reason}")


def _first_line(err: BaseException) -> str:
    text = str(getattr(err, "reason", None) or err)
    return text.splitlines()[0] if text else type(err).__name__


def fetch(
    url: str,
    dest: str | os.PathLike,
    *,
    sha256: str | None = None,
    sha1: str | None = None,
    size: int | None = None,
    progress: Progress | None = None,
    retries: int = RETRIES,
) -> Path:
    """Download `url` to `dest` (see the module doc). Returns `dest`."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    failures = 0
    while True:
        have = part.stat().st_size if part.exists() else 0
        if size is not None and have > size:  # not a prefix of the file we want
            part.unlink()
            have = 0
        if size is not None and have == size:
            break
        try:
            total = _download_once(url, part, have, progress)
        except urllib.error.HTTPError as err:
            if err.code == 416 and have:  # "range not satisfiable": the .part is complete or stale
                if size is None:
                    break
                part.unlink()
            elif err.code not in _TRANSIENT:
                raise _http_error(url, err) from None
            failures += 1
            last: BaseException = err
        except (urllib.error.URLError, http.client.HTTPException, OSError) as err:
            failures += 1
            last = err
        else:
            got = part.stat().st_size
            if total is None or got >= total:
                break
            failures += 1  # the server closed the connection early: resume from what arrived
            last = ConnectionError(f"connection closed after {got} of {total} bytes")
        if failures > retries:
            kept = part.stat().st_size if part.exists() else 0
            raise RegistryError(
                f"{url}: download failed after {retries} retries ({_first_line(last)}); "
                f"{kept} bytes kept in {part}, the next pull resumes from there"
            ) from None
        time.sleep(RETRY_WAIT_S * failures)
    _check(part, url, size=size, sha256=sha256, sha1=sha1)
    os.replace(part, dest)
    return dest


def _download_once(url: str, part: Path, have: int, progress: Progress | None) -> int | None:
    """One GET (ranged from `have`) appended to `part`. Returns the expected full size (None: unknown)."""
    req = urllib.request.Request(url, headers=_headers({"Range": f"bytes={have}-"} if have else None))
    with urllib.request.urlopen(req, timeout=TIMEOUT_S) as resp:
        resumed = have > 0 and getattr(resp, "status", None) == 206
        if not resumed:
            have = 0  # a plain 200 (no Range support): the body is the whole file
        length = resp.headers.get("Content-Length")
        total = have + int(length) if length is not None else None
        done = have
        with open(part, "ab" if resumed else "wb") as fh:
            while chunk := resp.read(CHUNK):
                fh.write(chunk)
                done += len(chunk)
                if progress is not None:
                    progress(done, total)
    return total


def _check(path: Path, source: str, *, size: int | None, sha256: str | None, sha1: str | None) -> None:
    """Size and hash of a finished download; a mismatch deletes `path` and raises ChecksumError."""
    problem = None
    got_size = path.stat().st_size
    if size is not None and got_size != size:
        problem = f"{got_size} bytes, expected {size}"
    else:
        for algorithm, want in (("sha256", sha256), ("sha1", sha1)):
            if want:
                got = file_digest(path, algorithm)
                if got != want.lower():
                    problem = f"{algorithm} {got}, expected {want}"
                    break
    if problem:
        path.unlink()
        raise ChecksumError(f"{source}: downloaded file has {problem}; refused and deleted")


def read_url(url: str, *, retries: int = RETRIES) -> bytes:
    """The body of a small file at `url` (http, https or file)."""
    for attempt in range(retries + 1):
        try:
            with urllib.request.urlopen(urllib.request.Request(url, headers=_headers()), timeout=TIMEOUT_S) as resp:
                return resp.read()
        except urllib.error.HTTPError as err:
            if err.code not in _TRANSIENT or attempt == retries:
                raise _http_error(url, err) from None
        except (urllib.error.URLError, http.client.HTTPException, OSError) as err:
            if attempt == retries:
                raise RegistryError(f"{url}: cannot read ({_first_line(err)})") from None
        time.sleep(RETRY_WAIT_S * (attempt + 1))
    raise AssertionError("unreachable")


def put_file(url: str, path: str | os.PathLike) -> None:
    """Upload a file with HTTP PUT (streamed, with its Content-Length)."""
    path = Path(path)
    with open(path, "rb") as fh:
        _put(url, fh, path.stat().st_size)


def put_bytes(url: str, data: bytes) -> None:
    _put(url, data, len(data))


def _put(url: str, body, length: int) -> None:
    headers = _headers({"Content-Length": str(length), "Content-Type": "application/octet-stream"})
    req = urllib.request.Request(url, data=body, method="PUT", headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=TIMEOUT_S) as resp:
            resp.read()
    except urllib.error.HTTPError as err:
        raise RegistryError(f"upload to {url} refused: HTTP {err.code} {err.reason}") from None
    except (urllib.error.URLError, http.client.HTTPException, OSError) as err:
        raise RegistryError(f"upload to {url} failed: {_first_line(err)}") from None
