"""Benchmark files taken out of a package's archive on a package registry (a source
``.tar.gz`` or a wheel), without installing the package (BIG-bench's archive holds
StrategyQA and TruthfulQA, but installing it pulls tensorflow; inspect-evals' wheel holds
WritingBench).

``prepare`` downloads the pinned archive once, checks its SHA-256 while it streams, copies
out only the named members (read as bytes and written under the cache: no path from the
archive is ever used as a path here) and checks each against its own SHA-256. The archive
is not kept. Layout: ``$DECEVAL_CACHE/tasks/<dist>-<version>/<member file name>``.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tarfile
import tempfile
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

from harness.errors import PromptError
from harness.models import cache_root

CHUNK = 1 << 20


@dataclass(frozen=True)
class PackageArchive:
    """A pinned source archive and the members a task reads from it."""

    dist: str
    version: str
    url: str
    sha256: str
    size: int  # bytes, for the message before a download
    #: member path inside the archive -> SHA-256 of its content
    members: Mapping[str, str]
    #: why the registry no longer serves the archive (None: it does); the task then needs
    #: a copy the user has: ``deceval tasks prepare NAME --archive FILE`` (checksum still checked)
    withdrawn: str | None = None

    def folder(self, cache_dir: Path | str | None = None) -> Path:
        return cache_root(cache_dir) / "tasks" / f"{self.dist}-{self.version}"

    def path(self, member: str, cache_dir: Path | str | None = None) -> Path:
        return self.folder(cache_dir) / Path(member).name

    def problem(self, cache_dir: Path | str | None = None) -> str | None:
        """None when every member is in the cache with its content unchanged."""
        for member, digest in self.members.items():
            p = self.path(member, cache_dir)
            if not p.is_file():
                if self.withdrawn:
                    return (f"not prepared ({p} is missing), and {self.withdrawn}; with a copy of "
                            f"{self.file_name} run `deceval tasks prepare` with --archive FILE")
                return f"not prepared ({p} is missing): run `deceval tasks prepare` for it"
            if _sha256(p) != digest:
                return f"{p} has another SHA-256 than the pinned one: run `deceval tasks prepare` again"
        return None

    @property
    def file_name(self) -> str:
        return self.url.rsplit("/", 1)[-1]

    def prepare(self, cache_dir: Path | str | None = None, local: Path | str | None = None) -> Path:
        """Fetch the archive (or read ``local``, a copy the user has), check its SHA-256 and
        copy the members out; a no-op when prepared."""
        if self.problem(cache_dir) is None:
            return self.folder(cache_dir)
        folder = self.folder(cache_dir)
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=folder) as tmp:
            archive = Path(tmp) / "archive"
            if local is not None:
                self._copy_local(Path(local), archive)
            else:
                self._download(archive)
            staged = Path(tmp) / "members"
            staged.mkdir()
            self._extract(archive, staged)
            for member in self.members:  # all checked before any is moved in
                os.replace(staged / Path(member).name, self.path(member, cache_dir))
        return folder

    def _download(self, dest: Path) -> None:
        h = hashlib.sha256()
        try:
            with urllib.request.urlopen(self.url, timeout=120) as r, dest.open("wb") as f:  # noqa: S310 - pinned URL
                while chunk := r.read(CHUNK):
                    h.update(chunk)
                    f.write(chunk)
        except (OSError, ValueError) as exc:
            hint = (f"{self.withdrawn}; with a copy of {self.file_name} run `deceval tasks prepare` with --archive FILE"
                    if self.withdrawn else "check the network or the proxy, then run `deceval tasks prepare` again")
            raise PromptError(f"{self.dist} {self.version}: cannot download {self.url} ({exc.__class__.__name__}: "
                              f"{exc}); {hint}") from None
        self._check_digest(h.hexdigest(), self.url)

    def _copy_local(self, src: Path, dest: Path) -> None:
        h = hashlib.sha256()
        try:
            with src.open("rb") as r, dest.open("wb") as f:
                while chunk := r.read(CHUNK):
                    h.update(chunk)
                    f.write(chunk)
        except OSError as exc:
            raise PromptError(f"--archive {src}: cannot read it ({exc.__class__.__name__}: {exc.strerror or exc}); "
                              f"give the path of {self.file_name}") from None
        self._check_digest(h.hexdigest(), str(src))

    def _check_digest(self, got: str, where: str) -> None:
        if got != self.sha256:
            raise PromptError(f"{self.dist} {self.version}: the archive from {where} has SHA-256 "
                              f"{got[:16]}..., expected {self.sha256[:16]}... ({self.file_name}); nothing was kept")

    def _extract(self, archive: Path, dest: Path) -> None:
        wanted = dict(self.members)
        try:
            if self.file_name.endswith((".whl", ".zip")):
                with zipfile.ZipFile(archive) as z:
                    for name in z.namelist():
                        if name in wanted:
                            with z.open(name) as src, (dest / Path(name).name).open("wb") as f:
                                shutil.copyfileobj(src, f)
            else:
                with tarfile.open(archive, "r:gz") as t:
                    for m in t:
                        if m.name in wanted and m.isfile():
                            src = t.extractfile(m)
                            with (dest / Path(m.name).name).open("wb") as f:
                                shutil.copyfileobj(src, f)
        except (tarfile.TarError, zipfile.BadZipFile, OSError, EOFError) as exc:
            raise PromptError(f"{self.dist} {self.version}: cannot read the archive ({exc}); nothing was kept") from None
        for member, digest in wanted.items():
            p = dest / Path(member).name
            if not p.is_file():
                raise PromptError(f"{self.dist} {self.version}: the archive has no {member}; nothing was kept")
            if _sha256(p) != digest:
                raise PromptError(f"{self.dist} {self.version}: {member} has another SHA-256 than the pinned one; "
                                  f"nothing was kept")


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()
