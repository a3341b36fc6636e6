"""``mtlbench data``: fetch what is missing, then say what is present and whether it is intact."""

from __future__ import annotations

from pathlib import Path

from .download import fetch
from .features import cache_problems, read_manifest
from .images import ImageDatasetSource
from .source import DatasetSource, DataUnavailableError, sha256_of


def fetch_and_report(source: DatasetSource, data_dir: Path, download: bool = True, progress: bool = True) -> bool:
    """Download the missing parts (unless ``download`` is False), print a report; True when complete."""
    root = source.root(data_dir)
    print(f"{source.name}: {root}" + (f" (licence: {source.licence})" if getattr(source, "licence", "") else ""))
    failures = []
    if download:
        for entry in source.downloads:
            if entry.target(root).exists():
                continue
            print(f"  fetching {entry.url}")
            try:
                fetch(entry, root, source.how_to_get, progress)
            except DataUnavailableError as error:
                failures.append(str(error))
    complete = _report_files(source, root) & _report_images(source, data_dir)
    _report_feature_caches(root)
    for failure in failures:
        print(f"  download failed: {failure.splitlines()[0]}")
    if failures or not complete:
        print(f"  to place the files by hand: {source.how_to_get}")
    return complete and not failures


def _report_files(source: DatasetSource, root: Path) -> bool:
    complete = True
    for relative, expected in source.files.items():
        path = root / relative
        state = "ok" if path.is_file() and sha256_of(path) == expected else "CORRUPT" if path.is_file() else "missing"
        complete &= state == "ok"
        print(f"  {relative:<40} {state}" + ("" if state == "ok" else f" (expected SHA-256 {expected})"))
    return complete


def _report_images(source: DatasetSource, data_dir: Path) -> bool:
    """Images are the dataset where a source has no native input; elsewhere (SURF) they are optional."""
    if not isinstance(source, ImageDatasetSource):
        return True
    all_present = True
    for task, entries in source.image_counts(data_dir).items():
        expected = source.expected_images.get(task)
        if entries is None:
            all_present = False
            print(f"  images {task:<12} missing ({source.root(data_dir) / source.task_folders[task]})")
            continue
        labels = {label for _, label in entries}
        missing = [c for i, c in enumerate(source.classes) if i not in labels]
        state = "complete" if len(entries) == expected else f"of {expected} expected"
        print(f"  images {task:<12} {len(entries)} {state}"
              + (f"; no images of {len(missing)} class(es): {', '.join(missing[:5])}" if missing else ""))
    return all_present or bool(source.native_features)


def _report_feature_caches(root: Path) -> None:
    for directory in sorted((root / "features").glob("*")) if (root / "features").is_dir() else []:
        if directory.name.endswith((".partial", ".writing")):
            print(f"  features {directory.name}: an unfinished extraction (running, or stopped: `mtlbench features` continues it)")
            continue
        problems = cache_problems(directory)
        if problems:
            print(f"  features {directory.name}: BROKEN ({problems[0]}); `mtlbench features` rebuilds it")
        else:
            manifest = read_manifest(directory)
            counts = ", ".join(f"{t} {shape[0]}" for t, shape in manifest["shapes"].items())
            print(f"  features {directory.name}: verified ({counts}; weights {manifest['weights']})")
