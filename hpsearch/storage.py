"""Where a sweep's results live: a folder on this machine or a URI in a bucket, one ``Location``
either way, for everything hpsearch writes beside Ray's results (the sweep record, MLflow writes
kept for later, the nightly ledger) and what it reads back (results, checkpoints).

A URI is opened by pyarrow's filesystems, the layer Ray Tune's own storage uses, so a URI Ray
can write to hpsearch can too, with the same credentials: ``s3://bucket/prefix`` (credentials
and region from the AWS chain; an S3-compatible server through ``$AWS_ENDPOINT_URL`` or
``?endpoint_override=host:port&scheme=http``), ``gs://``, ``abfs://``, ``hdfs://``.
Local folders stay on pathlib (no pyarrow import on the light paths).

Example:
    >>> import tempfile; root = Location.open(tempfile.mkdtemp())
    >>> (root / "sweep" / "a.json").write_text("{}"); (root / "sweep" / "a.json").read_text()
    '{}'
    >>> [c.name for c in root.children()], root.is_local
    (['sweep'], True)
    >>> Location.open("foo://bucket/x")
    Traceback (most recent call last):
    ...
    ValueError: storage: 'foo://bucket/x' has a scheme no filesystem opens (a local folder, or s3://, gs://, abfs://, hdfs://)
"""

from __future__ import annotations

import functools
import os
import shutil
import tempfile
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from hpsearch.environment import default_storage


def is_uri(where: str | os.PathLike) -> bool:
    return "://" in str(where) and not str(where).startswith("file://")


class Location:
    """A file or folder in a sweep's storage. ``uri`` is what Ray's ``storage_path`` and a later
    ``Location.open`` take: an absolute local path, or the URI with its query kept."""

    def __init__(self, uri: str, fs=None, path: str | None = None):
        self._fs, self._path = fs, path  # pyarrow's filesystem and the path inside it (URIs only)
        self.uri = uri

    # -- opening -------------------------------------------------------------------------

    @classmethod
    def open(cls, where: str | os.PathLike, name: str = "storage", probe: bool = True) -> "Location":
        """A local folder (made absolute) or a URI, checked: one line (``ValueError`` naming
        ``name``) if no filesystem opens it, or (``probe``) its bucket is missing, unreachable or
        refuses these credentials. Writes nothing."""
        text = str(where).strip()
        if text.startswith("file://"):
            text = text[len("file://"):]
        if not is_uri(text):
            return cls(str(Path(text).expanduser().resolve()))
        text = text.rstrip("/")
        fs, path = _from_uri(text, name)
        loc = cls(text, fs, path)
        if probe:
            loc.probe(name)
        return loc

    def probe(self, name: str = "storage") -> None:
        """The bucket (the path's first part) answers: reachable, there, and these credentials may read it."""
        pafs = _pafs()
        bucket = self._path.split("/", 1)[0]
        try:
            info = self._fs.get_file_info(bucket)
        except OSError as exc:
            if self.uri.startswith("s3://") and not _aws_credentials_configured():
                raise ValueError(f"{name}: cannot open {self.uri!r}: no AWS credentials found (set AWS_ACCESS_KEY_ID "
                                 f"and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE){_endpoint()}") from None
            raise ValueError(f"{name}: cannot open {self.uri!r}: {_why(exc)}") from None
        if info.type == pafs.FileType.NotFound:
            raise ValueError(f"{name}: bucket {bucket!r} of {self.uri!r} does not exist (create it first){_endpoint()}")

    # -- paths ---------------------------------------------------------------------------

    @property
    def is_local(self) -> bool:
        return self._fs is None

    @property
    def local(self) -> Path:
        """The local path (``is_local`` only)."""
        assert self.is_local, self.uri
        return Path(self.uri)

    @property
    def name(self) -> str:
        return self.uri.split("?", 1)[0].rstrip("/").rsplit("/", 1)[-1]

    def __truediv__(self, part: str) -> "Location":
        if self.is_local:
            return Location(str(Path(self.uri, part)))
        base, _, query = self.uri.partition("?")
        return Location(f"{base}/{part}" + (f"?{query}" if query else ""), self._fs, f"{self._path}/{part}")

    @property
    def parent(self) -> "Location":
        if self.is_local:
            return Location(str(self.local.parent))
        return self.at(self._path.rsplit("/", 1)[0])

    def at_name(self, name: str) -> "Location":
        """A sibling: the same folder, another name."""
        return self.parent / name

    def at(self, fs_path: str) -> "Location":
        """The location of a path Ray reports on this storage's filesystem (a trial's or a
        checkpoint's ``path``: the URI without its scheme)."""
        if self.is_local:
            return Location(str(fs_path))
        base, _, query = self.uri.partition("?")
        scheme = base.split("://", 1)[0]
        return Location(f"{scheme}://{fs_path}" + (f"?{query}" if query else ""), self._fs, fs_path)

    def __repr__(self) -> str:
        return f"Location({self.uri!r})"

    def __str__(self) -> str:
        return self.uri

    def __eq__(self, other) -> bool:
        return isinstance(other, Location) and self.uri == other.uri

    def __hash__(self) -> int:
        return hash(self.uri)

    # -- reading and writing --------------------------------------------------------------

    def exists(self) -> bool:
        if self.is_local:
            return self.local.exists()
        pafs = _pafs()
        return self._fs.get_file_info(self._path).type != pafs.FileType.NotFound

    def is_dir(self) -> bool:
        if self.is_local:
            return self.local.is_dir()
        pafs = _pafs()
        return self._fs.get_file_info(self._path).type == pafs.FileType.Directory

    def children(self) -> list["Location"]:
        """The folders directly inside this one, by name."""
        return self._entries(folders=True)

    def files(self) -> list["Location"]:
        """The files directly inside this folder, by name."""
        return self._entries(folders=False)

    def _entries(self, folders: bool) -> list["Location"]:
        if self.is_local:
            if not self.is_dir():
                return []
            return [Location(str(p)) for p in sorted(self.local.iterdir()) if (p.is_dir() if folders else p.is_file())]
        pafs = _pafs()
        kind = pafs.FileType.Directory if folders else pafs.FileType.File
        infos = self._fs.get_file_info(pafs.FileSelector(self._path, allow_not_found=True))
        return [self.at(i.path) for i in sorted(infos, key=lambda i: i.path) if i.type == kind]

    def read_bytes(self) -> bytes:
        if self.is_local:
            return self.local.read_bytes()
        with self._fs.open_input_stream(self._path) as f:
            return f.read()

    def read_text(self) -> str:
        return self.read_bytes().decode()

    def write_text(self, text: str) -> None:
        """Write the whole file at once: a reader sees the old text or the new one, never half (a
        local file is renamed into place; an object store replaces an object atomically)."""
        if self.is_local:
            self.local.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.local.with_name(f".{self.local.name}.{uuid.uuid4().hex[:8]}.tmp")
            tmp.write_text(text)
            os.replace(tmp, self.local)
            return
        with self._fs.open_output_stream(self._path) as f:
            f.write(text.encode())

    def rename(self, other: "Location") -> None:
        if self.is_local:
            os.replace(self.local, other.local)
        else:
            self._fs.move(self._path, other._path)

    def remove(self) -> None:
        """Delete this file or folder (and what it holds); nothing if it is not there."""
        if self.is_local:
            if self.local.is_dir():
                shutil.rmtree(self.local, ignore_errors=True)
            else:
                self.local.unlink(missing_ok=True)
            return
        pafs = _pafs()
        kind = self._fs.get_file_info(self._path).type
        if kind == pafs.FileType.Directory:
            self._fs.delete_dir(self._path)
        elif kind == pafs.FileType.File:
            self._fs.delete_file(self._path)

    @contextmanager
    def local_copy(self) -> Iterator[Path]:
        """This folder (or file) on the local disk: itself when local, else a temporary download."""
        if self.is_local:
            yield self.local
            return
        pafs = _pafs()
        with tempfile.TemporaryDirectory(prefix="hpsearch-") as tmp:
            dest = Path(tmp, self.name)
            if self.is_dir():
                dest.mkdir()
                pafs.copy_files(self._path, str(dest), source_filesystem=self._fs,
                                destination_filesystem=pafs.LocalFileSystem())
            else:
                dest.write_bytes(self._fs.open_input_stream(self._path).read())
            yield dest


def as_location(where: "str | os.PathLike | Location") -> Location:
    """A Location for a path or URI already checked (a sweep's own folder, a journal in it)."""
    return where if isinstance(where, Location) else Location.open(where, probe=False)


def open_storage(where: str | os.PathLike | None, name: str = "storage") -> Location:
    """The storage a sweep names, or the default (``$HPSEARCH_STORAGE``, else ~/ray_results)."""
    return Location.open(where if where not in (None, "") else default_storage(),
                         name if where not in (None, "") else "HPSEARCH_STORAGE")


@functools.lru_cache(maxsize=16)  # a filesystem per URI, reused (an S3 client is not free to make)
def _from_uri(uri: str, name: str):
    import pyarrow  # pyarrow (~100 ms): only for storage in a bucket

    try:
        return _pafs().FileSystem.from_uri(uri)
    except pyarrow.ArrowInvalid as exc:
        if "Unrecognized filesystem type" in str(exc):
            raise ValueError(f"{name}: {uri!r} has a scheme no filesystem opens "
                             "(a local folder, or s3://, gs://, abfs://, hdfs://)") from None
        raise ValueError(f"{name}: cannot open {uri!r}: {_why(exc)}") from None
    except (OSError, ImportError) as exc:
        raise ValueError(f"{name}: cannot open {uri!r}: {_why(exc)}") from None


def _pafs():
    import pyarrow.fs as pafs  # pyarrow (~100 ms): only for storage in a bucket

    return pafs


def _aws_credentials_configured() -> bool:
    """Whether any of the AWS chain's usual sources is set (variables, profile files, web identity,
    a container's credentials); an instance role is not seen here, so this only words a failure."""
    env = os.environ
    if any(env.get(k) for k in ("AWS_ACCESS_KEY_ID", "AWS_PROFILE", "AWS_WEB_IDENTITY_TOKEN_FILE",
                                "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "AWS_CONTAINER_CREDENTIALS_FULL_URI")):
        return True
    files = [env.get("AWS_SHARED_CREDENTIALS_FILE", "~/.aws/credentials"), env.get("AWS_CONFIG_FILE", "~/.aws/config")]
    return any(Path(f).expanduser().is_file() for f in files)


def _endpoint() -> str:
    url = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    return f" at {url}" if url else ""


def _why(exc: BaseException) -> str:
    """pyarrow's error, cut to the words a person acts on."""
    text = " ".join(str(exc).split())
    if "ACCESS_DENIED" in text or "AccessDenied" in text or "403" in text or "InvalidAccessKeyId" in text:
        return ("access denied: no or wrong credentials (set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, "
                "or AWS_PROFILE)" + _endpoint())
    if "NETWORK_CONNECTION" in text or "Could not connect" in text or "Couldn't resolve" in text:
        return "endpoint unreachable" + (_endpoint() or "") + " (check $AWS_ENDPOINT_URL or the URI's endpoint_override)"
    return text[:300]
