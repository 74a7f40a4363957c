"""Image references (``busybox``, ``python:3.11``, ``docker.io/library/x@sha256:…``) as the cluster stores them.

The cluster registry serves every name under its path only (containerd sends ``docker.io/library/x``
to it as ``/v2/library/x/…``, and names of other hosts without the host), so :attr:`ImageRef.repo` is
the Docker-normalized path: one component gains ``library/``; a leading host is dropped.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_REPO_RE = re.compile(rf"^{_COMPONENT}(?:/{_COMPONENT})*$")
_TAG_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
_DIGEST_RE = re.compile(r"^sha256:[0-9a-f]{64}$")


class ReferenceError(ValueError):
    """Not a valid image name (one line)."""


@dataclass(frozen=True)
class ImageRef:
    repo: str                 # library/busybox
    tag: str = "latest"
    digest: str = ""
    host: str = ""            # the host the name carried (docker.io when it named none)

    @property
    def ref(self) -> str:
        """What goes in ``/v2/<repo>/manifests/<ref>``: the digest when there is one, else the tag."""
        return self.digest or self.tag

    def __str__(self) -> str:
        return f"{self.repo}@{self.digest}" if self.digest else f"{self.repo}:{self.tag}"

    @staticmethod
    def parse(name: str) -> ImageRef:
        text = name.strip()
        if not text:
            raise ReferenceError("empty image name")
        digest = ""
        if "@" in text:
            text, digest = text.split("@", 1)
            if not _DIGEST_RE.match(digest):
                raise ReferenceError(f"invalid digest in image name {name!r}")
        tag = ""
        slash = text.rfind("/")
        colon = text.rfind(":")
        if colon > slash:
            text, tag = text[:colon], text[colon + 1:]
            if not _TAG_RE.match(tag):
                raise ReferenceError(f"invalid tag in image name {name!r}")
        parts = text.split("/")
        host = "docker.io"
        if len(parts) > 1 and ("." in parts[0] or ":" in parts[0] or parts[0] == "localhost"):
            host = parts[0]
            parts = parts[1:]
        if host in ("docker.io", "index.docker.io", "registry-1.docker.io"):
            host = "docker.io"
        if len(parts) == 1:
            parts = ["library", *parts]
        repo = "/".join(parts)
        if not _REPO_RE.match(repo) or len(repo) > 255:
            raise ReferenceError(f"invalid repository name in image name {name!r} (lower case, digits, . _ - /)")
        return ImageRef(repo=repo, tag=tag or ("" if digest else "latest"), digest=digest, host=host)
