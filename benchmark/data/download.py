"""Fetching dataset files: download to a temporary name, verify, then rename; unpack the same way.

Nothing half-written ever carries a final name: a download is streamed to ``.<name>.part`` and
renamed only after its SHA-256 matched (where one is known), and an archive is unpacked into a
temporary folder whose contents are moved into place only once it unpacked completely. A failed
download raises :class:`~benchmark.data.source.DataUnavailableError` with the manual steps.
"""

from __future__ import annotations

import hashlib
import shutil
import tarfile
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from .source import DataUnavailableError


@dataclass(frozen=True)
class Download:
    """One public file: where it comes from, what it is called, and what it unpacks to.

    ``sha256`` is None where the publisher gives no checksum; the sum of what was downloaded is
    then printed and the unpacked contents are checked by counting instead.
    """

    url: str
    filename: str
    sha256: str | None = None
    unpack: bool = False  # a .zip / .tar(.gz) whose contents go into the dataset folder
    provides: str = ""  # the file or folder (relative to the dataset folder) it provides

    def target(self, root: Path) -> Path:
        return root / (self.provides or self.filename)


def domain_archives(urls: dict[str, str], suffix: str) -> tuple[Download, ...]:
    """One archive per domain (``domain -> URL``), each unpacking to the folder ``<domain>/``."""
    return tuple(Download(url, f"{domain}{suffix}", unpack=True, provides=domain) for domain, url in urls.items())


TSINGHUA_MIRROR = "https://cloud.tsinghua.edu.cn/f/{}/?dl=1"  # the Transfer-Learning-Library's dataset mirror


def fetch(download: Download, root: Path, manual_steps: str, progress: bool = True) -> Path:
    """Download (and unpack) ``download`` into ``root`` unless what it provides is already there."""
    target = download.target(root)
    if target.exists():
        return target
    root.mkdir(parents=True, exist_ok=True)
    archive = root / download.filename
    if not archive.is_file():
        _download_verified(download, archive, manual_steps, progress)
    if download.unpack:
        _unpack(archive, root, manual_steps)
        if not target.exists():
            raise DataUnavailableError(f"{archive} unpacked, but {target} is not in it.\n{manual_steps}")
    return target


def _download_verified(download: Download, destination: Path, manual_steps: str, progress: bool) -> None:
    partial = destination.with_name(f".{destination.name}.part")
    digest = hashlib.sha256()
    try:
        with urllib.request.urlopen(download.url, timeout=60) as response, open(partial, "wb") as handle:
            total = int(response.headers.get("Content-Length") or 0) or None
            with tqdm(total=total, unit="B", unit_scale=True, desc=destination.name, disable=not progress) as bar:
                for block in iter(lambda: response.read(1 << 20), b""):
                    handle.write(block)
                    digest.update(block)
                    bar.update(len(block))
    except OSError as error:  # URLError, timeouts and a full disk alike
        partial.unlink(missing_ok=True)
        raise DataUnavailableError(
            f"could not download {download.url} ({error}).\nManual steps: {manual_steps}"
        ) from error
    actual = digest.hexdigest()
    if download.sha256 is not None and actual != download.sha256:
        partial.unlink(missing_ok=True)
        raise DataUnavailableError(
            f"{download.url} failed its SHA-256 check (expected {download.sha256}, got {actual}); the download "
            f"was removed.\nManual steps: {manual_steps}"
        )
    partial.rename(destination)
    if download.sha256 is None:
        print(f"downloaded {destination} (SHA-256 {actual}; the publisher gives none to compare with)")


def _unpack(archive: Path, root: Path, manual_steps: str) -> None:
    staging = root / f".unpacking-{archive.name}"
    shutil.rmtree(staging, ignore_errors=True)
    try:
        if zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as bundle:
                bundle.extractall(staging)
        else:
            with tarfile.open(archive) as bundle:
                bundle.extractall(staging, filter="data")
    except (OSError, zipfile.BadZipFile, tarfile.TarError) as error:
        shutil.rmtree(staging, ignore_errors=True)
        raise DataUnavailableError(f"{archive} could not be unpacked ({error}); delete it and retry.\n"
                                   f"Manual steps: {manual_steps}") from error
    for entry in staging.iterdir():
        destination = root / entry.name
        if not destination.exists():
            entry.rename(destination)
    shutil.rmtree(staging, ignore_errors=True)
