"""``minictl image``: images in the cluster registry.

::

    minictl image push FILE.tar [--name REPO:TAG] [--registry URL]   import a docker save / OCI layout tarball
    minictl image ls [--registry URL]                                repositories, tags and digests
    minictl image rm NAME[:TAG] [--registry URL]                     delete a tag's manifest

The registry is ``--registry URL``, else ``$MINIK8S_REGISTRY`` (a URL), else
``http://127.0.0.1:$MINIK8S_REGISTRY_PORT`` from ``$MINIK8S_HOME/cluster.env`` (written by ``make up``).
Names are shown as pods use them: ``library/x`` is ``x``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import click

from minictl.printers import aligned, one_line
from minik8s.client.config import minik8s_home
from minik8s.images.importer import ArchiveError, import_archive
from minik8s.images.oci import ImageError
from minik8s.images.reference import ImageRef, ReferenceError
from minik8s.images.registry import Registry, RegistryError


class _NoRegistry(Exception):
    pass


def read_cluster_env(home: Path) -> dict[str, str]:
    values: dict[str, str] = {}
    try:
        text = (home / "cluster.env").read_text()
    except OSError:
        return values
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#") and "=" in line:
            key, value = line.split("=", 1)
            values[key.strip().removeprefix("export ").strip()] = value.strip().strip("'\"")
    return values


def registry_url(flag: str | None, env: dict[str, str] | None = None) -> str:
    env = dict(os.environ) if env is None else env
    if flag:
        return flag
    if env.get("MINIK8S_REGISTRY"):
        return env["MINIK8S_REGISTRY"]
    home = minik8s_home(env)
    port = read_cluster_env(home).get("MINIK8S_REGISTRY_PORT")
    if port:
        return f"http://127.0.0.1:{port}"
    raise _NoRegistry(f"no cluster registry found (no MINIK8S_REGISTRY_PORT in {home / 'cluster.env'}); "
                      "run make up or pass --registry URL")


def display_name(repo: str) -> str:
    return repo.removeprefix("library/")


@contextmanager
def _registry(flag: str | None) -> Iterator[Registry]:
    """The registry, with every failure turned into one ``error:`` line and exit code 1."""
    try:
        with Registry(registry_url(flag)) as reg:
            yield reg
    except (_NoRegistry, RegistryError, ArchiveError, ReferenceError, ImageError, OSError) as exc:
        click.echo(f"error: {one_line(str(exc))}", err=True)
        raise click.exceptions.Exit(1) from exc


registry_option = click.option("--registry", "registry", default=None, metavar="URL",
                               help="The registry (default: the cluster's, from $MINIK8S_HOME/cluster.env).")


@click.group("image")
def image() -> None:
    """Images in the cluster registry: push archives, list, remove."""


@image.command("push")
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--name", default=None, metavar="REPO:TAG", help="Push under this name instead of the archive's.")
@registry_option
def push(file: str, name: str | None, registry: str | None) -> None:
    """Import a `docker save` or OCI-layout tarball into the cluster registry."""
    with _registry(registry) as reg:
        for done in import_archive(reg, file, name=name):
            ref = ImageRef.parse(done.name)
            click.echo(f"pushed {display_name(ref.repo)}:{ref.tag} {done.digest} "
                       f"({done.uploaded} blobs uploaded, {done.present} already there)")


@image.command("ls")
@registry_option
def ls(registry: str | None) -> None:
    """List the registry's repositories and tags."""
    with _registry(registry) as reg:
        rows = [["REPOSITORY", "TAG", "DIGEST"]]
        for repo in reg.catalog():
            for tag in reg.tags(repo):
                digest = reg.manifest_digest(repo, tag) or ""
                rows.append([display_name(repo), tag, digest[:19]])
        click.echo("\n".join(aligned(rows)))


@image.command("rm")
@click.argument("names", nargs=-1, required=True)
@registry_option
def rm(names: tuple[str, ...], registry: str | None) -> None:
    """Delete tags' manifests (blobs are freed by the registry's garbage collection)."""
    with _registry(registry) as reg:
        for name in names:
            ref = ImageRef.parse(name)
            digest = reg.delete_manifest(ref.repo, ref.ref)
            click.echo(f"deleted {display_name(ref.repo)}:{ref.ref} {digest}")
