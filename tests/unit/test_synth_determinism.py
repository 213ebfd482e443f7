"""Same seed, same bytes; another seed, another city."""

from __future__ import annotations

import json
from pathlib import Path

from kansrijk.synth.city import generate_city


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_seed_gives_byte_identical_files(tmp_path: Path) -> None:
    a = generate_city(tmp_path / "a", persons=1_500, seed=11, years=(2022, 2023))
    b = generate_city(tmp_path / "b", persons=1_500, seed=11, years=(2022, 2023))
    files_a, files_b = _files(a.root), _files(b.root)
    assert len(files_a) == 4 * 2 + 3 + 1
    assert files_a == files_b


def test_another_seed_gives_different_files(tmp_path: Path) -> None:
    a = generate_city(tmp_path / "a", persons=1_500, seed=11)
    b = generate_city(tmp_path / "b", persons=1_500, seed=12)
    files_a, files_b = _files(a.root), _files(b.root)
    assert files_a.keys() == files_b.keys()
    for name in files_a:
        assert files_a[name] != files_b[name], name


def test_city_marker_is_written_last_and_lists_every_file_with_its_digest(tmp_path: Path) -> None:
    paths = generate_city(tmp_path / "c", persons=500, seed=1)
    marker = json.loads(paths.marker.read_text())
    listed = set(marker["files"])
    on_disk = {k for k in _files(paths.root) if k != "city.json"}
    assert listed == on_disk
    newest = max(p.stat().st_mtime_ns for p in paths.root.rglob("*") if p.is_file() and p.name != "city.json")
    assert paths.marker.stat().st_mtime_ns >= newest
