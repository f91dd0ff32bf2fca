"""The packed llama.cpp build that lets a fresh GPU machine skip the compile (benchmarks.llamacpp)."""

from __future__ import annotations

import time
from pathlib import Path

from benchmarks import llamacpp

USAGE = "#!/bin/sh\necho 'usage: llama-bench [options]'\n"
MISSING_LIBRARY = (
    "#!/bin/sh\necho 'llama-bench: error while loading shared libraries: libcublas.so.13: "
    "cannot open shared object file' >&2\nexit 127\n"
)


def fake_build(tmp_path: Path, llama_bench: str = USAGE) -> tuple[Path, Path]:
    """A source tarball and a finished 'build' of it: a llama-bench (a script printing its usage) and a
    library under build/bin."""
    src = tmp_path / "src" / "llama.cpp-src.tar.xz"
    src.parent.mkdir()
    src.write_bytes(b"source tarball stand-in")
    cache = tmp_path / "cache"
    work = llamacpp.build_dir(src, cache)
    bin_dir = work / "build" / "bin"
    bin_dir.mkdir(parents=True)
    (bin_dir / "llama-bench").write_text(llama_bench + "# padding\n" * 4096)
    (bin_dir / "llama-bench").chmod(0o755)
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
    assert (fresh / "build" / "bin" / "llama-bench").read_text().startswith(USAGE)
    parts[-1].write_bytes(parts[-1].read_bytes()[:-100])  # truncated: e.g. one part of another export
    assert not llamacpp.restore_prebuilt(src, tmp_path / "again")
    assert "do not unpack" in capsys.readouterr().err


def test_restore_refuses_a_build_that_does_not_start_here(tmp_path, capsys) -> None:
    """Parts built on another machine whose llama-bench lacks a library here: compiled instead, and the
    unpacked files are not left to be taken for a build."""
    src, cache = fake_build(tmp_path, llama_bench=MISSING_LIBRARY)
    llamacpp.export(src, cache, src.parent)
    fresh = tmp_path / "fresh"
    assert not llamacpp.restore_prebuilt(src, fresh)
    err = capsys.readouterr().err
    assert "does not start" in err and "exit code 127" in err and "libcublas.so.13" in err
    assert not (fresh / "build" / "bin").exists() and not (fresh / llamacpp.BUILD_OK).exists()


def test_the_parts_alone_are_enough_and_name_their_source(tmp_path) -> None:
    """A machine given only the exported parts (not the 8 MiB tarball) restores them: the digest that names
    the build comes from the parts' names, so the cache folder and the record's source are the same."""
    src, cache = fake_build(tmp_path)
    digest = llamacpp.source_digest(src)
    llamacpp.export(src, cache, src.parent)
    src.unlink()
    assert llamacpp.source_digest(src) == digest
    exe = llamacpp.build(src, tmp_path / "fresh-cache")
    assert exe == llamacpp.llama_bench_path(tmp_path / "fresh-cache" / digest) and exe.read_text().startswith(
        USAGE
    )


def test_without_a_tarball_the_parts_must_be_of_one_build(tmp_path) -> None:
    import pytest

    src = tmp_path / "src" / "llama.cpp-src.tar.xz"
    src.parent.mkdir()
    with pytest.raises(llamacpp.LlamaCppError, match="nor the parts of an exported build"):
        llamacpp.source_digest(src)
    for digest in ("0123456789abcdef", "fedcba9876543210"):
        (src.parent / f"{llamacpp.PREBUILT_PREFIX}{digest}.tar.xz.part00").write_bytes(b"x")
    with pytest.raises(llamacpp.LlamaCppError, match="parts of 2 exported builds"):
        llamacpp.source_digest(src)


def test_a_python_without_the_data_filter_unpacks_the_same_and_refuses_a_way_out(
    tmp_path, monkeypatch
) -> None:
    """`extract_data` on a Python before tarfile's 'data' filter (3.11.0-3.11.3): the parts unpack as
    with it, and a member that leaves the folder (a `..` path, a link out) is refused."""
    import io
    import tarfile

    monkeypatch.delattr(tarfile, "data_filter", raising=False)
    src, cache = fake_build(tmp_path)
    llamacpp.export(src, cache, src.parent)
    fresh = tmp_path / "fresh"
    assert llamacpp.restore_prebuilt(src, fresh)
    assert (fresh / "build" / "bin" / "llama-bench").read_text().startswith(USAGE)
    for name, link in (("../escape", None), ("out", "../../etc/passwd")):
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as tar:
            member = tarfile.TarInfo(name)
            if link is not None:
                member.type, member.linkname = tarfile.SYMTYPE, link
            tar.addfile(member, io.BytesIO(b""))
        buf.seek(0)
        dest = tmp_path / "dest"
        dest.mkdir(exist_ok=True)
        with tarfile.open(fileobj=buf) as tar:
            try:
                llamacpp.extract_data(tar, dest)
            except tarfile.TarError as e:
                assert repr(name) in str(e)
            else:
                raise AssertionError(f"{name!r} was extracted")
