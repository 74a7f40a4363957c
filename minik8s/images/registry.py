"""A client of the Registry HTTP API v2 (distribution), synchronous, on httpx.

::

    with Registry("http://127.0.0.1:15000") as reg:
        reg.push_blob("library/x", digest, data)                # HEAD first: skipped when present
        reg.mount_blob("fn/hello", digest, "library/python")    # cross-repository mount, upload on 202
        reg.push_manifest("library/x", "1.0", manifest_bytes, OCI_MANIFEST)
        body, media_type, digest = reg.get_manifest("library/x", "1.0")

Uploads are monolithic (POST ``/blobs/uploads/`` then PUT ``?digest=``). Every failure is a
:class:`RegistryError` whose message is one line (what, the HTTP status, the registry's error code).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import urljoin

import httpx

from minik8s.images.layers import CHUNK, Layer
from minik8s.images.media import MANIFEST_ACCEPT

BlobSource = bytes | Path | Layer | Callable[[], BinaryIO]


class RegistryError(Exception):
    """A registry request failed; the message is one line. ``status`` is the HTTP status (0: no answer)."""

    def __init__(self, message: str, *, status: int = 0, code: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.code = code


def _open(source: BlobSource) -> BinaryIO:
    if isinstance(source, Layer):
        return source.open()
    if isinstance(source, Path):
        return open(source, "rb")
    if callable(source):
        return source()
    raise TypeError(f"not a blob source: {type(source).__name__}")


def _chunks(source: BlobSource) -> Iterator[bytes]:
    with _open(source) as f:
        while chunk := f.read(CHUNK):
            yield chunk


def _size(source: BlobSource, size: int | None) -> int | None:
    if isinstance(source, bytes):
        return len(source)
    if isinstance(source, Layer):
        return source.size
    if isinstance(source, Path):
        return source.stat().st_size
    return size


class Registry:
    """One registry (base URL ``http://host:port``); reuses one HTTP connection pool."""

    def __init__(self, url: str, *, timeout: float = 120.0, transport: httpx.BaseTransport | None = None) -> None:
        if not url.startswith(("http://", "https://")):
            url = "http://" + url
        self.url = url.rstrip("/")
        # Plain http (the cluster registry) skips loading a CA bundle: that alone costs tens of ms.
        self._http = httpx.Client(base_url=self.url, timeout=httpx.Timeout(timeout, connect=5.0),
                                  transport=transport, follow_redirects=True, verify=self.url.startswith("https"))

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Registry:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------------------------------- plumbing

    def _request(self, method: str, url: str, what: str, *, ok: tuple[int, ...],
                 **kwargs: Any) -> httpx.Response:
        try:
            resp = self._http.request(method, url, **kwargs)
        except httpx.HTTPError as exc:
            raise RegistryError(f"{what}: cannot reach the registry at {self.url}: {exc}") from exc
        if resp.status_code not in ok:
            raise self._error(resp, what)
        return resp

    @staticmethod
    def _error(resp: httpx.Response, what: str) -> RegistryError:
        code, message = "", ""
        try:
            errors = resp.json().get("errors") or []
            if errors:
                code = str(errors[0].get("code") or "")
                message = str(errors[0].get("message") or "")
                detail = errors[0].get("detail")
                if detail and isinstance(detail, str | int | float):
                    message += f" ({detail})"
        except (ValueError, AttributeError):
            message = resp.text[:200] if resp.request.method != "HEAD" else ""
        text = f"{what}: HTTP {resp.status_code}" + (f" {code}" if code else "") + (f": {message}" if message else "")
        return RegistryError(" ".join(text.split()), status=resp.status_code, code=code)

    def _location(self, resp: httpx.Response, what: str) -> str:
        location = resp.headers.get("location")
        if not location:
            raise RegistryError(f"{what}: the registry gave no upload location", status=resp.status_code)
        return urljoin(self.url + "/", location)

    # ------------------------------------------------------------------------------------------------ API

    def ping(self) -> None:
        """Raise unless ``GET /v2/`` answers 200."""
        self._request("GET", "/v2/", "registry check", ok=(200,))

    def blob_exists(self, repo: str, digest: str) -> bool:
        resp = self._request("HEAD", f"/v2/{repo}/blobs/{digest}", f"HEAD blob {repo}@{digest[:19]}",
                             ok=(200, 404))
        return resp.status_code == 200

    def _upload(self, location: str, repo: str, digest: str, source: BlobSource, size: int | None) -> None:
        url = httpx.URL(location).copy_add_param("digest", digest)
        length = _size(source, size)
        headers = {"Content-Type": "application/octet-stream"}
        if length is not None:
            headers["Content-Length"] = str(length)
        content = source if isinstance(source, bytes) else _chunks(source)
        self._request("PUT", str(url), f"upload blob {repo}@{digest[:19]}", ok=(201, 204),
                      content=content, headers=headers)

    def push_blob(self, repo: str, digest: str, source: BlobSource, *, size: int | None = None,
                  check: bool = True) -> bool:
        """Upload a blob unless the repository has it (``check``). True when it was uploaded."""
        if check and self.blob_exists(repo, digest):
            return False
        what = f"start upload to {repo}"
        location = self._location(self._request("POST", f"/v2/{repo}/blobs/uploads/", what, ok=(202,)), what)
        self._upload(location, repo, digest, source, size)
        return True

    def mount_blob(self, repo: str, digest: str, from_repo: str, source: BlobSource | None = None, *,
                   size: int | None = None) -> str:
        """Cross-repository mount of ``digest`` from ``from_repo`` into ``repo``.

        Returns ``"mounted"`` (201), or ``"uploaded"`` when the registry answered 202 (it does not have
        the blob there) and ``source`` was given to upload it in the session it opened.
        """
        what = f"mount {digest[:19]} from {from_repo} into {repo}"
        resp = self._request("POST", f"/v2/{repo}/blobs/uploads/", what, ok=(201, 202),
                             params={"mount": digest, "from": from_repo})
        if resp.status_code == 201:
            return "mounted"
        location = self._location(resp, what)
        if source is None:
            with contextlib.suppress(httpx.HTTPError):
                self._http.delete(location)     # cancel the upload session the registry opened
            raise RegistryError(f"{what}: the registry does not have the blob in {from_repo}", status=202)
        self._upload(location, repo, digest, source, size)
        return "uploaded"

    def push_manifest(self, repo: str, ref: str, manifest: bytes, media_type: str) -> str:
        """PUT a manifest under a tag (or its digest); returns the digest the registry reports."""
        resp = self._request("PUT", f"/v2/{repo}/manifests/{ref}", f"push manifest {repo}:{ref}", ok=(201,),
                             content=manifest, headers={"Content-Type": media_type})
        return resp.headers.get("docker-content-digest") or "sha256:" + hashlib.sha256(manifest).hexdigest()

    def get_manifest(self, repo: str, ref: str) -> tuple[bytes, str, str]:
        """``(body, media type, digest)`` of a manifest or index, asking for every type we read."""
        resp = self._request("GET", f"/v2/{repo}/manifests/{ref}", f"get manifest {repo}:{ref}", ok=(200,),
                             headers={"Accept": MANIFEST_ACCEPT})
        body = resp.content
        media_type = resp.headers.get("content-type", "").split(";")[0].strip()
        if not media_type:
            media_type = str(json.loads(body).get("mediaType") or "")
        digest = resp.headers.get("docker-content-digest") or "sha256:" + hashlib.sha256(body).hexdigest()
        return body, media_type, digest

    def manifest_digest(self, repo: str, ref: str) -> str | None:
        """The digest of a tag or digest by HEAD, or None when the registry has no such manifest."""
        resp = self._request("HEAD", f"/v2/{repo}/manifests/{ref}", f"HEAD manifest {repo}:{ref}", ok=(200, 404),
                             headers={"Accept": MANIFEST_ACCEPT})
        if resp.status_code == 404:
            return None
        return resp.headers.get("docker-content-digest") or ""

    def get_blob(self, repo: str, digest: str) -> bytes:
        resp = self._request("GET", f"/v2/{repo}/blobs/{digest}", f"get blob {repo}@{digest[:19]}", ok=(200,))
        return resp.content

    def download_blob(self, repo: str, digest: str, dest: Path) -> None:
        """Stream a blob to ``dest``, checking its digest."""
        what = f"get blob {repo}@{digest[:19]}"
        h = hashlib.sha256()
        try:
            with self._http.stream("GET", f"/v2/{repo}/blobs/{digest}") as resp, open(dest, "wb") as out:
                if resp.status_code != 200:
                    resp.read()
                    raise self._error(resp, what)
                for chunk in resp.iter_bytes(CHUNK):
                    h.update(chunk)
                    out.write(chunk)
        except httpx.HTTPError as exc:
            raise RegistryError(f"{what}: cannot reach the registry at {self.url}: {exc}") from exc
        if "sha256:" + h.hexdigest() != digest:
            raise RegistryError(f"{what}: content does not match its digest")

    def tags(self, repo: str) -> list[str]:
        """The repository's tags; none for a repository that holds only blobs (the catalog lists those)."""
        what = f"list tags of {repo}"
        resp = self._request("GET", f"/v2/{repo}/tags/list", what, ok=(200, 404))
        if resp.status_code == 404:
            error = self._error(resp, what)
            if error.code == "NAME_UNKNOWN":
                return []
            raise error
        return sorted(resp.json().get("tags") or [])

    def catalog(self, *, page: int = 1000) -> list[str]:
        """Every repository, following ``Link`` pagination."""
        repos: list[str] = []
        url: str | None = f"/v2/_catalog?n={page}"
        while url:
            resp = self._request("GET", url, "list repositories", ok=(200,))
            repos.extend(resp.json().get("repositories") or [])
            nxt = resp.links.get("next", {}).get("url")
            url = urljoin(self.url + "/", nxt) if nxt else None
        return sorted(repos)

    def delete_manifest(self, repo: str, ref: str) -> str:
        """Delete a manifest by digest, or the manifest a tag names (the registry needs the digest).

        Needs ``storage.delete.enabled``. Returns the deleted digest.
        """
        digest = ref if ref.startswith("sha256:") else self.manifest_digest(repo, ref)
        if not digest:
            raise RegistryError(f"delete manifest {repo}:{ref}: HTTP 404 MANIFEST_UNKNOWN", status=404,
                                code="MANIFEST_UNKNOWN")
        self._request("DELETE", f"/v2/{repo}/manifests/{digest}", f"delete manifest {repo}@{digest[:19]}",
                      ok=(202,))
        return digest

    def delete_blob(self, repo: str, digest: str) -> None:
        self._request("DELETE", f"/v2/{repo}/blobs/{digest}", f"delete blob {repo}@{digest[:19]}", ok=(202,))
