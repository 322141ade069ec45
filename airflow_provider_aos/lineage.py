"""
OpenLineage datasets of an audit export (used only when the openlineage provider is installed).

Names follow the OpenLineage naming spec (namespace ``scheme://authority``, name the path; together
they spell the resource's URI):

* the AOS audit API: namespace ``scheme://host[:port]`` of the Graph API (default port left out), name
  the endpoint's URL path, e.g. ``https://graph-us.avepointonlineservices.com`` + ``/aos/audit``, or
  ``http://127.0.0.1:8080`` + ``/graph/aos/audit`` for a base URL with a path (the emulator);
* the file written: ``file`` + ``/abs/path`` (a local file), ``file://host`` + ``/path``, and for an
  object store the bucket (container) + the object key without leading slash: ``s3://bucket`` +
  ``key``, ``gs://bucket`` + ``key``, ``abfss://container[@account host]`` + ``path`` (also for
  ``abfs``/``az``), ``wasbs://...`` likewise (as OpenLineage's own filesystem helpers name them); any
  other URL ``scheme://host[:port]`` + ``/path``.

No name holds user info (a password, or the connection id of an Airflow object-storage URL such as
``s3://aws_conn@bucket/key``), a query string or a fragment. Nothing from OpenLineage is imported at
module level: the module imports cleanly without the provider.
"""

from __future__ import annotations

import posixpath
from collections.abc import Mapping
from typing import Any
from urllib.parse import SplitResult, unquote, urlsplit

__all__ = ["AUDIT_ENDPOINT", "api_dataset_name", "audit_export_lineage", "storage_dataset_name"]

AUDIT_ENDPOINT = "aos/audit"
DEFAULT_PORTS = {"http": 80, "https": 443}
# Object-store schemes whose namespace is the bucket (container): fsspec name -> OpenLineage name.
BUCKET_SCHEMES = {
    "s3": "s3",
    "s3a": "s3",
    "s3n": "s3",
    "gs": "gs",
    "gcs": "gs",
    "abfs": "abfss",
    "abfss": "abfss",
    "az": "abfss",
    "adl": "abfss",
    "wasb": "wasbs",
    "wasbs": "wasbs",
}


def _authority(parts: SplitResult) -> str:
    """``host[:port]`` without user info, lower case, the scheme's default port left out."""
    host = (parts.hostname or "").lower()
    if ":" in host:  # IPv6
        host = f"[{host}]"
    try:
        port = parts.port
    except ValueError:  # not a number: leave it out rather than fail the task's lineage
        port = None
    if port is not None and port != DEFAULT_PORTS.get(parts.scheme.lower()):
        host = f"{host}:{port}"
    return host


def api_dataset_name(api_url: str, endpoint: str = AUDIT_ENDPOINT) -> tuple[str, str]:
    """
    ``(namespace, name)`` of an AOS API endpoint: ``("https://host[:port]", "/base/path/endpoint")``.

    ``api_url`` is the connection's Graph API base URL; a base path (the emulator's ``/graph``) is
    part of the name, so ``namespace + name`` is the endpoint's URL without query string.
    """
    parts = urlsplit(api_url.strip())
    scheme = (parts.scheme or "https").lower()
    path = parts.path.rstrip("/") + "/" + endpoint.strip("/")
    return f"{scheme}://{_authority(parts)}", path


def storage_dataset_name(path: str) -> tuple[str, str]:
    """``(namespace, name)`` of a file path or object-storage URL (str of an ``ObjectStoragePath``)."""
    raw = path.strip()
    parts = urlsplit(raw)
    scheme = parts.scheme.lower()
    if not scheme or len(scheme) == 1:  # a plain path (a one-letter scheme is a Windows drive)
        return "file", raw if scheme else posixpath.abspath(raw)
    if scheme in ("file", "local"):
        host = _authority(parts)
        name = unquote(parts.path) or "/"
        if host in ("", "localhost"):
            return "file", name
        return f"file://{host}", name
    if scheme in BUCKET_SCHEMES:
        target = BUCKET_SCHEMES[scheme]
        bucket = (parts.hostname or "").lower()
        if target in ("abfss", "wasbs") and bucket.endswith(".core.windows.net") and parts.username:
            # container@account.dfs.core.windows.net; otherwise the user info is a connection id
            bucket = f"{parts.username}@{bucket}"
        return f"{target}://{bucket}", parts.path.lstrip("/") or "/"
    return f"{scheme}://{_authority(parts)}", parts.path or "/"


def audit_export_lineage(*, api_url: str, manifest: Mapping[str, Any]) -> Any:
    """
    The ``OperatorLineage`` of a finished export: the audit API as input, the written file as output
    with an ``outputStatistics`` facet (``rowCount``: records written, ``size``: bytes when known).
    """
    from airflow.providers.common.compat.openlineage.facet import (
        InputDataset,
        OutputDataset,
        OutputStatisticsOutputDatasetFacet,
    )
    from airflow.providers.openlineage.extractors import OperatorLineage

    in_namespace, in_name = api_dataset_name(api_url)
    out_namespace, out_name = storage_dataset_name(str(manifest["path"]))
    size = manifest.get("bytes")
    stats = OutputStatisticsOutputDatasetFacet(
        rowCount=int(manifest["records"]), size=None if size is None else int(size)
    )
    return OperatorLineage(
        inputs=[InputDataset(namespace=in_namespace, name=in_name)],
        outputs=[
            OutputDataset(namespace=out_namespace, name=out_name, outputFacets={"outputStatistics": stats})
        ],
    )
