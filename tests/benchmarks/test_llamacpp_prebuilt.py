"""The packed llama.cpp build that lets a fresh GPU machine skip the compile (benchmarks.llamacpp)."""

from __future__ import annotations

import time
from pathlib import Path

from benchmarks import llamacpp


def fake_build(tmp_path: Path) -> tuple[Path, Path]:
    """A source tarball and a finished 'build' of it: two binaries under build/bin."""
    src = tmp_path / "src" / "llama.cpp-src.tar.xz"
    src.parent.mkdir()
    src.write_bytes(b"source tarball stand-in")
    cache = tmp_path / "cache"
    work = llamacpp.build_dir(src, cache)
    bin_dir = work / "build" / "bin"
    bin_dir.mkdir(parents=True)
    (bin_dir / "llama-bench").write_bytes(b"\x7fELF not really" * 4096)
    (bin_dir / "libggml.so").write_bytes(bytes(range(256)) * 4096)
    (work / llamacpp.BUILD_OK).write_text("built in 1 s\n")
    return src, cache


def test_two_exports_of_one_build_give_the_same_bytes(tmp_path) -> None:
    src, cache = fake_build(tmp_path)
    first = [p.read_bytes() for p in llamacpp.export(src, cache, tmp_path / "a", part_mib=1)]
    time.sleep(1.1)  # a later export sees later file times (strip rewrites the files)
    for f in (llamacpp.build_dir(src, cache) / "build" / "bin").iterdir():
        f.touch()
    second = [p.read_bytes() for p in llamacpp.export(src, cache, tmp_path / "b", part_mib=1)]
    assert first == second


def test_restore_unpacks_the_parts_and_refuses_a_broken_set(tmp_path, capsys) -> None:
    src, cache = fake_build(tmp_path)
    parts = llamacpp.export(src, cache, src.parent)
    fresh = tmp_path / "fresh"
    assert llamacpp.restore_prebuilt(src, fresh)
    assert (fresh / "build" / "bin" / "llama-bench").read_bytes().startswith(b"\x7fELF")
    parts[-1].write_bytes(parts[-1].read_bytes()[:-100])  # truncated: e.g. one part of another export
    assert not llamacpp.restore_prebuilt(src, tmp_path / "again")
    assert "do not unpack" in capsys.readouterr().err
