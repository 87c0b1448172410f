"""Where a request's video comes from, safely.

    data:video/mp4;base64,...   decoded, size-limited, stored by content hash (store.py: bounded, LRU)
    file:///path                only under the configured allowed roots (realpath, so no
                                '..' or symlink escapes)
    kangaroo-file://ID          a file uploaded to /v1/files
    http(s)://host/...          off by default; when enabled, only allow-listed hosts, and
                                never an address that is loopback, private, link-local,
                                multicast or reserved (checked after DNS resolution)

Every refusal is a ``MediaError`` with an HTTP status and a message that says what to change.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import ipaddress
import os
import re
import socket
from dataclasses import dataclass
from urllib.parse import unquote, urlparse


class MediaError(Exception):
    def __init__(self, status: int, message: str):
        self.status, self.message = status, message
        super().__init__(message)


@dataclass
class MediaPolicy:
    store: str  # folder for uploads and decoded data: URLs
    allowed_roots: tuple[str, ...] = ()
    allow_remote: bool = False
    remote_hosts: tuple[str, ...] = ()
    max_bytes: int = 256 * 1024 * 1024


def sha256_file(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def store_bytes(policy: MediaPolicy, data: bytes, suffix: str = ".mp4", store=None) -> tuple[str, str, bool]:
    """Write ``data`` into the store under its hash: (file id, path, created by this call).
    ``store``: the server's bounded ``Store`` (store.py); without one, an unbounded one on ``policy.store``."""
    from .store import Store

    if len(data) > policy.max_bytes:
        raise MediaError(413, f"video is {len(data)} bytes; the limit is {policy.max_bytes}")
    return (store or Store(policy.store)).put(data, suffix)


def upload_path(policy: MediaPolicy, fid: str) -> str:
    if not re.fullmatch(r"file-[0-9a-f]{32}", fid):
        raise MediaError(400, f"malformed file id {fid!r}")
    for name in os.listdir(policy.store) if os.path.isdir(policy.store) else []:
        if name.startswith(fid + ".") and not name.endswith(".part"):
            return os.path.join(policy.store, name)
    raise MediaError(404, f"no uploaded file {fid}; upload it with POST /v1/files first")


def _under(path: str, roots: tuple[str, ...]) -> bool:
    real = os.path.realpath(path)
    for root in roots:
        r = os.path.realpath(root)
        if real == r or real.startswith(r.rstrip(os.sep) + os.sep):
            return True
    return False


def _check_ip(host: str) -> None:
    try:
        infos = socket.getaddrinfo(host, None)
    except socket.gaierror:
        raise MediaError(400, f"cannot resolve host {host!r}") from None
    for info in infos:
        ip = ipaddress.ip_address(info[4][0].split("%")[0])
        if not ip.is_global or ip.is_multicast:
            raise MediaError(403, f"refusing to fetch from {host} ({ip}): not a public address")


def fetch_remote(policy: MediaPolicy, url: str, store=None) -> tuple[str, bool]:
    import httpx

    host = urlparse(url).hostname or ""
    if not policy.allow_remote:
        raise MediaError(403, "fetching http(s) URLs is disabled on this server; send the video as a data: URL "
                              "or upload it to /v1/files")
    if host.lower() not in {h.lower() for h in policy.remote_hosts}:
        raise MediaError(403, f"host {host!r} is not in the server's allow-list")
    _check_ip(host)
    with httpx.Client(follow_redirects=False, timeout=30.0) as client, client.stream("GET", url) as r:
        if r.status_code != 200:
            raise MediaError(400, f"fetching {url} gave HTTP {r.status_code}")
        chunks, size = [], 0
        for chunk in r.iter_bytes():
            size += len(chunk)
            if size > policy.max_bytes:
                raise MediaError(413, f"remote video exceeds {policy.max_bytes} bytes")
            chunks.append(chunk)
    return store_bytes(policy, b"".join(chunks), store=store)[1:]


def resolve_video(policy: MediaPolicy, url: str) -> str:
    """A local path for a request's video URL, or a ``MediaError``."""
    return resolve(policy, url)[0]


def resolve(policy: MediaPolicy, url: str, store=None) -> tuple[str, bool]:
    """(a local path for a request's video URL, whether this call wrote it into the store: a refused
    request deletes what it created), or a ``MediaError``."""
    if not isinstance(url, str) or not url:
        raise MediaError(400, "video_url.url must be a non-empty string")
    if "\x00" in url or "%00" in url:
        raise MediaError(400, "video_url.url contains a NUL byte")
    scheme = url.split(":", 1)[0].lower()
    if scheme == "data":
        m = re.match(r"data:([\w/+.-]*)(;[\w=.-]+)*?;base64,", url[:200])
        if not m:
            raise MediaError(400, "data: URLs must be base64 (data:video/mp4;base64,...)")
        if len(url) * 3 // 4 > policy.max_bytes:
            raise MediaError(413, f"video exceeds {policy.max_bytes} bytes; upload it to /v1/files instead")
        try:
            data = base64.b64decode(url[m.end():], validate=True)
        except (binascii.Error, ValueError):
            raise MediaError(400, "the data: URL is not valid base64") from None
        return store_bytes(policy, data, store=store)[1:]
    if scheme == "kangaroo-file":
        return upload_path(policy, url.split("://", 1)[-1]), False
    if scheme == "file":
        path = unquote(urlparse(url).path)
        if not policy.allowed_roots:
            raise MediaError(403, "file:// URLs are disabled: start the server with --allow-root DIR")
        if not _under(path, policy.allowed_roots):
            raise MediaError(403, f"{path} is outside the allowed roots")
        if not os.path.isfile(path):
            raise MediaError(404, f"no such file: {path}")
        return os.path.realpath(path), False
    if scheme in ("http", "https"):
        return fetch_remote(policy, url, store)
    raise MediaError(400, f"unsupported video URL scheme {scheme!r} (use data:, file://, kangaroo-file:// or https://)")
