"""Which 2-D matrices the CUDA model stores codes-then-scales when `--regroup` is not given
(`triton_gemv.regrouped_by_default`, from the timed step A/B), and that `--regroup` overrides it."""

from __future__ import annotations

import pytest
import torch

from kernels.formats import FORMATS, GGMLType
from kernels.qtensor import QTensor

triton_gemv = pytest.importorskip("kernels.triton_gemv", reason="triton is not installed")


def matrix(qtype: GGMLType, shape: tuple[int, ...], name: str = "w") -> QTensor:
    fmt = FORMATS[qtype]
    n_bytes = torch.Size(shape).numel() // fmt.block_size * fmt.type_size
    return QTensor(torch.zeros(n_bytes, dtype=torch.uint8), qtype, shape, name)


@pytest.mark.parametrize(
    ("qtype", "shape", "regrouped"),
    [
        (GGMLType.Q8_0, (151936, 896), True),  # Qwen2.5-0.5B's tied output
        (GGMLType.Q8_0, (64, 64), True),  # every Q8_0 matrix, however small
        (GGMLType.Q8_0, (5120, 2880), True),  # GPT-OSS-20B's q/k/v
        (GGMLType.Q6_K, (3072, 8192), True),  # Phi-3-mini's ffn_down, 19.7 MB
        (GGMLType.Q6_K, (32064, 3072), True),  # Phi-3-mini's output
        (GGMLType.Q6_K, (896, 4864), False),  # Qwen2.5-0.5B's ffn_down, 3.4 MB: timed slower regrouped
        (GGMLType.Q4_K, (3072, 8192), False),  # no regrouped layout timed for it
        (GGMLType.MXFP4, (2880, 2880), False),  # a 2-D MXFP4 matrix (3-D experts are always regrouped)
        (GGMLType.Q8_0, (4, 64, 64), False),  # 3-D: only MXFP4 experts
    ],
)
def test_the_default_regroups_every_q8_0_matrix_and_the_larger_q6_k_ones(qtype, shape, regrouped) -> None:
    assert triton_gemv.regrouped_by_default(matrix(qtype, shape)) is regrouped


def test_the_threshold_sits_between_the_timed_q6_k_matrices() -> None:
    """Qwen2.5's 3.4 MB Q6_K ffn_down lost 2.5 % of its step regrouped, Phi-3's 19.7 MB one gained 10 %."""
    qwen, phi = matrix(GGMLType.Q6_K, (896, 4864)), matrix(GGMLType.Q6_K, (3072, 8192))
    assert qwen.nbytes < triton_gemv.REGROUP_Q6_K_MIN_BYTES <= phi.nbytes


def test_pack_on_the_cpu_keeps_the_files_order() -> None:
    """The regrouped layouts are read by the CUDA kernels only: a CPU tensor stays as the file has it,
    whatever is asked."""
    w = matrix(GGMLType.Q8_0, (64, 64))
    assert triton_gemv.pack(w) is w and triton_gemv.pack(w, regroup=(GGMLType.Q8_0,)) is w
