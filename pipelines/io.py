"""Input listing and atomic output for local paths, object stores (s3://, gs://) and URLs.

All file-system access of the project goes through here, so operators never see a path.
"""

from __future__ import annotations

import fnmatch
import glob
import gzip
import io
import json
import os
import uuid
from typing import IO, Any

import pyarrow.fs as pafs

WARC_SUFFIXES = (".warc", ".warc.gz", ".warc.lz4", ".warc.zst", ".arc", ".arc.gz")
REMOTE_SCHEMES = ("s3://", "gs://", "gcs://", "hdfs://", "abfs://", "abfss://")
URL_SCHEMES = ("http://", "https://")


def _is_remote(path: str) -> bool:
    return path.startswith(REMOTE_SCHEMES)


def _has_glob(path: str) -> bool:
    return any(ch in path for ch in "*?[")


def _looks_like_warc(name: str) -> bool:
    return name.lower().endswith(WARC_SUFFIXES)


def _read_listing(spec: str, base_url: str) -> list[str]:
    """A Common Crawl `warc.paths[.gz]` listing: one relative path per line, joined to base_url."""
    raw = read_bytes(spec)
    if spec.endswith(".gz"):
        raw = gzip.decompress(raw)
    lines = [line.strip() for line in raw.decode("utf-8").splitlines()]
    base = base_url.rstrip("/") + "/"
    return [line if "://" in line else base + line.lstrip("/") for line in lines if line and not line.startswith("#")]


def _list_remote(spec: str) -> list[str]:
    fs, path = pafs.FileSystem.from_uri(spec.split("*")[0].rsplit("/", 1)[0] if _has_glob(spec) else spec)
    scheme = spec.split("://", 1)[0] + "://"
    if _has_glob(spec):
        pattern = spec.split("://", 1)[1]
        infos = fs.get_file_info(pafs.FileSelector(path, recursive=True))
        return [scheme + i.path for i in infos if i.type == pafs.FileType.File and fnmatch.fnmatch(i.path, pattern)]
    info = fs.get_file_info(path)
    if info.type == pafs.FileType.File:
        return [spec]
    if info.type == pafs.FileType.Directory:
        infos = fs.get_file_info(pafs.FileSelector(path, recursive=True))
        return [scheme + i.path for i in infos if i.type == pafs.FileType.File and _looks_like_warc(i.path)]
    return []


def input_locations(specs: list[str] | tuple[str, ...]) -> list[str]:
    """The input specs as locations independent of the working directory (local paths and globs made absolute,
    symlinks resolved; URIs and URLs as given), sorted: what a run records to recognise its own input again."""
    return sorted(s if s.startswith(URL_SCHEMES) or _is_remote(s) else os.path.realpath(s) for s in specs)


def list_inputs(specs: list[str] | tuple[str, ...], cc_base_url: str = "s3://commoncrawl/") -> list[str]:
    """Expand input specs into a sorted, de-duplicated list of WARC/ARC files.

    A spec is a local file, directory (searched recursively for WARC/ARC suffixes) or glob;
    an `s3://`/`gs://` file, prefix or glob; an http(s) URL; or a Common Crawl `warc.paths[.gz]`
    listing (its relative paths are joined to `cc_base_url`). A spec that matches nothing is an
    error: a typo must not become an empty run.
    """
    if not specs:
        raise ValueError("no input given: pass --input (a WARC file, directory, glob or warc.paths listing)")
    found: list[str] = []
    for spec in specs:
        if spec.endswith(("warc.paths", "warc.paths.gz")):
            matches = _read_listing(spec, cc_base_url)
        elif spec.startswith(URL_SCHEMES):
            matches = [spec]
        elif _is_remote(spec):
            matches = _list_remote(spec)
        elif os.path.isdir(spec):
            matches = [
                os.path.join(root, name)
                for root, _, names in os.walk(spec)
                for name in names
                if _looks_like_warc(name)
            ]
        elif _has_glob(spec):
            matches = [p for p in glob.glob(spec, recursive=True) if os.path.isfile(p)]
        else:
            matches = [spec] if os.path.isfile(spec) else []
        if not matches:
            raise ValueError(f"input {spec!r} matched no files")
        found.extend(os.path.abspath(m) if "://" not in m else m for m in matches)
    return sorted(set(found))


def open_input(path: str) -> IO[bytes]:
    """A seekable binary stream for any supported path (caller closes it)."""
    if path.startswith(URL_SCHEMES):
        import fsspec  # optional: only http(s) inputs need it

        return fsspec.open(path, "rb").open()
    if _is_remote(path):
        fs, p = pafs.FileSystem.from_uri(path)
        return fs.open_input_file(p)
    return open(path, "rb")


def read_bytes(path: str) -> bytes:
    with open_input(path) as f:
        return f.read()


class OutputDir:
    """A local or remote output folder with atomic file writes (temp name, then rename/move)."""

    def __init__(self, uri: str):
        self.uri = uri.rstrip("/")
        if _is_remote(uri):
            self.fs, self.root = pafs.FileSystem.from_uri(self.uri)
        else:
            self.fs, self.root = pafs.LocalFileSystem(), os.path.abspath(self.uri)

    def path(self, *parts: str) -> str:
        return "/".join([self.root, *parts])

    def uri_of(self, *parts: str) -> str:
        """A file under this folder as a URI that names its filesystem (`s3://bucket/...`; a plain path when local):
        what to hand to readers that are not given `self.fs` (Ray Data, another process)."""
        path = self.path(*parts)
        return path if isinstance(self.fs, pafs.LocalFileSystem) else f"{self.uri.split('://', 1)[0]}://{path}"

    @property
    def location(self) -> str:
        """Where this folder is, independent of the working directory (an absolute path, or the URI)."""
        return os.path.realpath(self.root) if isinstance(self.fs, pafs.LocalFileSystem) else self.uri

    def check_same_run(self, output_hash: str, src: "OutputDir", stage: str) -> None:
        """Before resuming into this folder: it must hold (if anything) a `stage` run with the same settings
        (`output_hash`) of the same input folder `src`, else a ValueError (never two runs mixed in one folder)."""
        if not self.exists("run.json"):
            return
        previous = self.read_json("run.json")
        if previous.get("output_hash") != output_hash:
            raise ValueError(f"{self.uri} holds a {stage} run made with different settings; choose a new --output")
        had = previous.get("input_location")
        if had is not None and had != src.location:
            raise ValueError(f"{self.uri} holds a {stage} run of {had}, not of {src.location}; choose a new --output")

    def exists(self, *parts: str) -> bool:
        return self.fs.get_file_info(self.path(*parts)).type != pafs.FileType.NotFound

    def makedirs(self, *parts: str) -> None:
        self.fs.create_dir(self.path(*parts), recursive=True)

    def check_writable(self) -> None:
        """Fail before any work starts if the location cannot be written."""
        try:
            self.makedirs()
            probe = self.path(f".write-probe-{uuid.uuid4().hex}")
            with self.fs.open_output_stream(probe) as f:
                f.write(b"ok")
            self.fs.delete_file(probe)
        except OSError as exc:
            raise ValueError(f"output location {self.uri!r} is not writable: {exc}") from exc

    def tmp_path(self, *parts: str) -> str:
        final = self.path(*parts)
        head, _, name = final.rpartition("/")
        return f"{head}/.tmp-{uuid.uuid4().hex[:12]}-{name}"

    def commit(self, tmp: str, *parts: str) -> None:
        """Move a finished temporary file to its final name (atomic on POSIX file systems)."""
        final = self.path(*parts)
        if isinstance(self.fs, pafs.LocalFileSystem):
            os.replace(tmp, final)
        else:
            self.fs.move(tmp, final)

    def write_bytes(self, data: bytes, *parts: str) -> None:
        tmp = self.tmp_path(*parts)
        with self.fs.open_output_stream(tmp) as f:
            f.write(data)
        self.commit(tmp, *parts)

    def write_json(self, obj: Any, *parts: str) -> None:
        self.write_bytes((json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n").encode(), *parts)

    def read_json(self, *parts: str) -> Any:
        with self.fs.open_input_stream(self.path(*parts)) as f:
            return json.load(io.BytesIO(f.read()))

    def remove_tree(self, *parts: str) -> None:
        """Delete a folder and what it holds (nothing if it is not there)."""
        if self.exists(*parts):
            self.fs.delete_dir(self.path(*parts))

    def list(self, *parts: str, suffix: str = "") -> list[str]:
        base = self.path(*parts)
        if self.fs.get_file_info(base).type != pafs.FileType.Directory:
            return []
        infos = self.fs.get_file_info(pafs.FileSelector(base))
        return sorted(i.base_name for i in infos if i.base_name.endswith(suffix) and not i.base_name.startswith("."))
