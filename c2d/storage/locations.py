"""Storage locations as URLs: ``s3://<bucket>/<key>``, ``ipfs://<cid>[/<path>]``, ``http(s)://...``.

Ocean file objects are turned into these (``{"type": "ipfs", "hash": ...}`` → ``ipfs://...``,
``{"type": "s3", "bucket": ..., "objectKey": ...}`` → ``s3://...``) so that every step and the
provider speak one form.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import urlsplit

# S3 bucket names (the rules AWS and MinIO share) and keys without control characters or "..".
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_CID = re.compile(r"^(Qm[1-9A-HJ-NP-Za-km-z]{44}|b[a-z2-7]{50,120}|[zfFBkK][0-9A-Za-z]{40,120})$")
_IPFS_PATH = re.compile(r"^[A-Za-z0-9._~!$&'()*+,;=:@%-]+(/[A-Za-z0-9._~!$&'()*+,;=:@%-]+)*$")
SCHEMES = ("http", "https", "s3", "ipfs")


class LocationError(ValueError):
    """A location is malformed or uses an unsupported scheme (the message never repeats the URL)."""


@dataclass(frozen=True)
class S3Location:
    bucket: str
    key: str

    @property
    def url(self) -> str:
        return f"s3://{self.bucket}/{self.key}"


@dataclass(frozen=True)
class IpfsLocation:
    cid: str
    path: str = ""

    @property
    def arg(self) -> str:
        """The argument of Kubo's ``cat``: ``/ipfs/<cid>[/<path>]``."""
        return f"/ipfs/{self.cid}" + (f"/{self.path}" if self.path else "")

    @property
    def url(self) -> str:
        return f"ipfs://{self.cid}" + (f"/{self.path}" if self.path else "")


def scheme_of(url: str) -> str:
    scheme = urlsplit(url).scheme.lower()
    if scheme not in SCHEMES:
        raise LocationError(f"unsupported URL scheme {scheme!r} (supported: {', '.join(SCHEMES)})")
    return scheme


def check_bucket(bucket: str) -> str:
    if not _BUCKET.match(bucket) or ".." in bucket:
        raise LocationError("invalid S3 bucket name")
    return bucket


def check_key(key: str) -> str:
    if not key or len(key.encode()) > 1024 or any(ord(ch) < 32 for ch in key):
        raise LocationError("invalid S3 object key")
    if any(part in ("", ".", "..") for part in key.split("/")):
        raise LocationError("S3 object keys must not have empty, '.' or '..' segments")
    return key


def parse_s3(url: str) -> S3Location:
    parts = urlsplit(url)
    if parts.scheme.lower() != "s3" or parts.query or parts.fragment or "@" in parts.netloc:
        raise LocationError("an S3 location is s3://<bucket>/<key>")
    return S3Location(check_bucket(parts.netloc), check_key(parts.path.removeprefix("/")))


def parse_ipfs(url: str) -> IpfsLocation:
    parts = urlsplit(url)
    if parts.scheme.lower() != "ipfs" or parts.query or parts.fragment:
        raise LocationError("an IPFS location is ipfs://<cid>[/<path>]")
    return ipfs_location(parts.netloc, parts.path.strip("/"))


def ipfs_location(cid: str, path: str = "") -> IpfsLocation:
    if not _CID.match(cid):
        raise LocationError("invalid IPFS CID")
    if path and (not _IPFS_PATH.match(path) or any(part in (".", "..") for part in path.split("/"))):
        raise LocationError("invalid path inside an IPFS CID")
    return IpfsLocation(cid, path)


def file_object_url(file: dict[str, object]) -> str:
    """The location of an Ocean file object (``url``, ``ipfs`` or ``s3`` type)."""
    kind = str(file.get("type") or "url")
    if kind == "url":
        url = str(file.get("url") or "")
        if not url:
            raise LocationError("a url file needs a url")
        scheme = scheme_of(url)
        if scheme == "s3":
            parse_s3(url)
        elif scheme == "ipfs":
            parse_ipfs(url)
        return url
    if kind == "ipfs":
        return ipfs_location(str(file.get("hash") or "")).url
    if kind == "s3":
        return S3Location(check_bucket(str(file.get("bucket") or "")), check_key(str(file.get("objectKey") or ""))).url
    raise LocationError(f"{kind!r} files are not supported (supported: url, ipfs, s3)")
