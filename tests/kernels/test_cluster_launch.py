"""`kernels.cluster_launch`: the packed launch metadata it changes, read from the installed Triton."""

from __future__ import annotations

import importlib.util

import pytest

from kernels import cluster_launch


def test_a_cluster_size_replaces_num_ctas_in_the_packed_metadata() -> None:
    assert cluster_launch.packed_for_cluster((4, 1, 2048), 1, 6) == (4, 6, 2048)


@pytest.mark.parametrize(
    ("packed", "num_ctas", "size", "error"),
    [
        ((4, 1), 1, 3, RuntimeError),  # a Triton whose launcher reads something else
        ((4, 2, 0), 1, 3, RuntimeError),  # num_ctas not where it is expected
        ((4, 2, 0), 2, 3, ValueError),  # Triton's own clusters
        ((4, 1, 0), 1, 9, ValueError),  # past the portable cluster size
        ((4, 1, 0), 1, 0, ValueError),
    ],
)
def test_what_cannot_be_clustered_is_refused(packed, num_ctas, size, error) -> None:
    with pytest.raises(error, match="cluster_launch"):
        cluster_launch.packed_for_cluster(packed, num_ctas, size)


@pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="needs Triton (the CUDA backend)")
def test_the_installed_triton_clusters_by_the_packed_num_ctas() -> None:
    """What `launch` relies on: the CUDA backend packs a compiled kernel's launch metadata as (num_warps,
    num_ctas, shared), the triple its launcher parses and clusters by."""
    assert cluster_launch.launcher_clusters_by_num_ctas()


def test_without_such_a_launcher_no_device_clusters(monkeypatch: pytest.MonkeyPatch) -> None:
    """A Triton whose launcher reads something else: the GEMV keeps its arrival counters."""
    import torch

    monkeypatch.setattr(cluster_launch, "launcher_clusters_by_num_ctas", lambda: False)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda index=None: (9, 0))
    cluster_launch._supported_on.cache_clear()
    try:
        assert not cluster_launch.supported(torch.device("cuda", 0))
    finally:
        cluster_launch._supported_on.cache_clear()
