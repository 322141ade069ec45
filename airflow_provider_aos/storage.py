"""
Write a file to Airflow object storage so that no reader ever sees half of it.

The file is written under a temporary name beside the destination and renamed into place only when
complete, so a killed or retried task never leaves a partial file at the final path, and a rerun
replaces the file. Temporary files that a killed attempt left (a SIGKILL skips every cleanup) are
swept by the next attempt: only names of our own pattern for that destination.
"""

from __future__ import annotations

import glob
import gzip
import json
import re
import uuid
from types import TracebackType
from typing import IO, Any

from airflow.providers.common.compat.sdk import ObjectStoragePath

from airflow_provider_aos.exceptions import AosConfigError


def temp_name_pattern(name: str) -> re.Pattern[str]:
    """The names of our temporary files for destination file ``name``, and nothing else."""
    return re.compile(rf"\.{re.escape(name)}\.[0-9a-f]{{32}}\.tmp")


def encode_record(record: Any) -> tuple[bytes, bool]:
    """
    One JSON Lines line (no newline) and whether it had to be ``\\uXXXX``-escaped.

    JSON allows a lone surrogate (``"\\ud800"``), which UTF-8 cannot encode; such a record is written
    with ASCII escapes instead, still valid JSON that decodes to the same value.
    """
    text = json.dumps(record, ensure_ascii=False, separators=(",", ":"))
    try:
        return text.encode(), False
    except UnicodeEncodeError:
        return json.dumps(record, ensure_ascii=True, separators=(",", ":")).encode(), True


class AtomicDestination:
    """
    One output file: checked before any download, written under a temporary name, moved into place.

    Use as ``with dest as out: out.write(...)``: the file appears at ``dest.path`` (its size in
    ``dest.size``) only when the block completes; on any exception the temporary file is removed. :meth:`discard` may be called
    from a signal handler (``on_kill``) to remove it at once.

    :param destination: file path or URL understood by Airflow object storage (absolute).
    :param conn_id: connection of the object store, if it needs one.
    :param compression: ``"gzip"``, ``None``/``"none"``, or ``"infer"`` (gzip for ``.gz``, any case).
    :param field: the argument to name in errors.
    """

    def __init__(
        self,
        destination: Any,
        *,
        conn_id: str | None = None,
        compression: str | None = "infer",
        field: str = "destination",
    ) -> None:
        dest = str(destination or "").strip()
        self.field = field
        if not dest or dest.endswith("/"):
            raise AosConfigError(field, f"{dest!r} must be a file path or URL, not a directory")
        if "://" not in dest and not dest.startswith("/"):
            raise AosConfigError(
                field,
                f"{dest!r} is relative to the worker's working directory; give an absolute path or a URL "
                "(file:///..., s3://...)",
            )
        if compression not in ("infer", "gzip", None, "none"):
            raise AosConfigError("compression", f"{compression!r}: use 'gzip', None or 'infer'")
        self.gzip = compression == "gzip" or (compression == "infer" and dest.lower().endswith(".gz"))
        self.path = ObjectStoragePath(dest, conn_id=conn_id)
        self.tmp: ObjectStoragePath | None = None
        self.size: int | None = None
        self._raw: IO[bytes] | None = None
        self._out: IO[bytes] | None = None

    def open(self) -> IO[bytes]:
        """
        Create the temporary file: proves the destination writable before any download. Also removes
        what killed earlier attempts left there.
        """
        path = self.path
        try:
            if path.is_dir():
                raise AosConfigError(self.field, f"{path} is an existing directory; give a file name")
            path.parent.mkdir(parents=True, exist_ok=True)
            pattern = temp_name_pattern(path.name)
            for stale in path.parent.glob(f".{glob.escape(path.name)}.*.tmp"):
                if pattern.fullmatch(stale.name):  # the glob narrows the listing; this decides
                    stale.unlink()
            # Same folder as the destination so the final move is a rename, not a cross-device copy.
            self.tmp = path.parent / f".{path.name}.{uuid.uuid4().hex}.tmp"
            self._raw = self.tmp.open("wb")  # type: ignore[no-untyped-call]
        except OSError as exc:
            self.tmp = None
            raise AosConfigError(
                self.field, f"cannot write beside {path}: {exc.strerror or exc} ({type(exc).__name__})"
            ) from exc
        assert self._raw is not None
        # mtime=0 and no file name in the gzip header: a rerun writes byte-identical output. Level 6
        # (zlib's and the gzip tool's default) rather than Python's 9: output a few percent larger,
        # compressed two to three times faster, and the compression runs on the task's one thread.
        out: IO[bytes] = self._raw
        if self.gzip:
            out = gzip.GzipFile(fileobj=self._raw, mode="wb", mtime=0, filename="", compresslevel=6)  # type: ignore[assignment]
        self._out = out
        return out

    def commit(self) -> int | None:
        """Close and move the file into place; returns its size when the store can tell cheaply."""
        self._close()
        assert self.tmp is not None, "commit() before open()"
        self.tmp.rename(self.path)
        self.tmp = None
        try:
            return int(self.path.stat().st_size)
        except Exception:  # some object stores cannot stat cheaply; the size is informative only
            return None

    def discard(self) -> None:
        """Remove the temporary file (safe to call twice, and from a signal handler: no lock taken)."""
        tmp = self.tmp
        if tmp is not None:
            tmp.unlink(missing_ok=True)

    def _close(self) -> None:
        out, raw, self._out, self._raw = self._out, self._raw, None, None
        if out is not None and out is not raw:
            out.close()
        if raw is not None:
            raw.close()

    def __enter__(self) -> IO[bytes]:
        return self.open()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        try:
            if exc is None:
                self.size = self.commit()
                return
            self._close()
        except BaseException:
            self.discard()
            self.tmp = None
            raise
        self.discard()
        self.tmp = None
