"""OCI images without a daemon: reproducible layers, configs and manifests, a Registry API v2 client,
building on a base with cross-repository mounts, the cluster's base images, and archive import.

::

    layers.py     Entry, Layer, layer_from_entries, layer_from_dir     (sorted tar, fixed metadata, gzip)
    oci.py        ContainerConfig, Image, make_config, make_manifest, read_layout, write_layout
    media.py      media types; MANIFEST_ACCEPT
    reference.py  ImageRef.parse("busybox") -> library/busybox:latest
    registry.py   Registry (httpx): blob_exists, push_blob, mount_blob, push_manifest, get_manifest, ...
    build.py      build_image, push_image (mounts base blobs), pull_image
    base.py       pause:3.9, busybox:latest, python:3.11 -> $MINIK8S_IMAGE_CACHE; seed(registry_url)
    importer.py   import_archive: docker save / OCI layout tarballs -> registry
"""

from minik8s.images.build import PushResult, build_image, pull_image, push_image
from minik8s.images.layers import Entry, Layer, LayerError, layer_from_dir, layer_from_entries
from minik8s.images.oci import ContainerConfig, Image, ImageError
from minik8s.images.reference import ImageRef, ReferenceError
from minik8s.images.registry import Registry, RegistryError

__all__ = ["ContainerConfig", "Entry", "Image", "ImageError", "ImageRef", "Layer", "LayerError", "PushResult",
           "ReferenceError", "Registry", "RegistryError", "build_image", "layer_from_dir", "layer_from_entries",
           "pull_image", "push_image"]
