"""Download a URL source once into the download cache, resuming a cut-off transfer, and check its pinned sha256."""

from __future__ import annotations

import shutil
import urllib.error
import urllib.request
from pathlib import Path

from llmrecipe.digests import sha256_file
from llmrecipe.errors import StepError

CHUNK = 1 << 20
TIMEOUT_S = 60


def fetch(url: str, sha256: str, cache_dir: Path) -> Path:
    """The cached file for `url`, named by its digest; downloaded (or resumed) when absent, verified either way.

    A partial download lives in `<sha256>.part` until it is complete and verified, so a killed transfer
    resumes with an HTTP Range request and a finished file is always whole."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    done = cache_dir / sha256
    if done.is_file():
        return done
    part = cache_dir / f"{sha256}.part"
    _download(url, part)
    actual = sha256_file(part)
    if actual != sha256:
        part.unlink()
        raise StepError(
            f"{url}: downloaded file has sha256 {actual}, but the recipe pins {sha256}; if the file changed "
            "on purpose, put its new digest in `sha256`, else the server sends something else (check the URL)"
        )
    part.replace(done)
    return done


def _download(url: str, part: Path) -> None:
    have = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response:
            # 206: the server continues where we stopped; 200: it ignores Range, so start over.
            mode = "ab" if have and response.status == 206 else "wb"
            expected = response.headers.get("Content-Length")
            with open(part, mode) as out:
                start = out.tell()
                shutil.copyfileobj(response, out, CHUNK)
                received = out.tell() - start
            if expected is not None and received < int(expected):
                raise OSError(f"connection closed after {received} of {expected} bytes")
    except urllib.error.HTTPError as error:
        if error.code == 416 and have:  # the part is already complete: nothing left to send
            return
        raise StepError(f"{url}: the server answered HTTP {error.code} {error.reason}; check the URL") from None
    except (urllib.error.URLError, OSError) as error:
        reason = getattr(error, "reason", error)
        raise StepError(
            f"{url}: download failed ({reason}); run again to resume from {part.stat().st_size if part.exists() else 0}"
            " bytes, or check the network"
        ) from None

