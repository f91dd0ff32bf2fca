"""The tensor-core GEMV's index algebra (`kernels.tensor_core_gemv`), re-stated in torch on the CPU: the A
operand a block's words make, the B operand the prologue stores and `_b_tile` reads back, and their
products scaled as the kernel scales them, against the reference path. Gluon has no interpreter, so this
is the check a layout change gets before any GPU time: each step below mirrors one function of the kernel
(a join is a stack on a new last axis, permutes and reshapes are the same; the inline assembly is the same
bit operations), so an operand laid out in the wrong K order fails here. The CUDA tests
(`test_tensor_core_gemv.py`) run the kernel itself."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from kernels.formats import GGMLType
from kernels.qmatmul import reference_qmatmul
from kernels.qtensor import QTensor

REL_TOL = 1e-6  # float64 products of the exact float16 codes and hi + lo activations


def join(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.stack((a, b), dim=-1)


def f16_halves(bits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A 32-bit register's two float16 halves (`mov.b32 {$0, $1}`: the low half first), as float64."""
    bits = bits.to(torch.int64) & 0xFFFFFFFF

    def as_f16(half: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(half.numpy().astype(np.uint16).view(np.float16)).double()

    return as_f16(bits & 0xFFFF), as_f16(bits >> 16)


def prmt(a: torch.Tensor, b: int, selector: int) -> torch.Tensor:
    """PTX `prmt.b32` in its default mode with selectors below 8 (no sign replication)."""
    src = [(a >> (8 * i)) & 0xFF for i in range(4)] + [
        torch.full_like(a, (b >> (8 * i)) & 0xFF) for i in range(4)
    ]
    out = torch.zeros_like(a)
    for i in range(4):
        out |= src[(selector >> (4 * i)) & 0x7] << (8 * i)
    return out


def q8_0_codes(words: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """`_q8_0_codes`: bytes 0, 2, 1, 3 of each word as float16 (q + 1152 - 1152)."""
    w = words ^ 0x80808080
    a0, a1 = f16_halves(prmt(w, 0x64646464, 0x4240))
    b0, b1 = f16_halves(prmt(w, 0x64646464, 0x4341))
    return a0 - 1152.0, a1 - 1152.0, b0 - 1152.0, b1 - 1152.0


def a_of_bytes(k0, k2, k1, k3) -> torch.Tensor:
    """`_a_of_bytes` over [..., 4 t, 2 u] words: [..., 32] in K order."""
    a = join(join(k0, k2), join(k1, k3))  # [..., t, u, half, p]
    a = a.permute(*range(a.dim() - 4), -3, -1, -4, -2)  # [..., u, p, t, half]
    return a.reshape(*a.shape[:-4], 32)


def code_pairs(words: torch.Tensor, shift: int) -> tuple[torch.Tensor, torch.Tensor]:
    """`_code_pairs`: the nibbles at bits shift and shift + 16 as float16 (OR-ed into 1024.0, 1024 off)."""
    lo, hi = f16_halves(((words >> shift) & 0x000F000F) | 0x64006400)
    return lo - 1024.0, hi - 1024.0


def mxfp4_pairs(words: torch.Tensor, s: int) -> tuple[torch.Tensor, torch.Tensor]:
    """`_mxfp4_pairs`: the codes at bits s and s + 16 as float16 (value x 2^-14)."""
    w = words & 0xFFFFFFFF
    mag = (w << (9 - s)) if s <= 9 else (w >> (s - 9))
    sign = (w << (12 - s)) & 0x80008000
    return f16_halves((mag & 0x0E000E00) | sign)


def mxfp4_a_tile(words: torch.Tensor) -> torch.Tensor:
    """`_mxfp4_a_tile` over [..., 4 t] words: [..., 32] in K order."""
    h0k0, h1k0, h0k1, h1k1 = (mxfp4_pairs(words, s) for s in (0, 4, 8, 12))
    k_h0 = join(join(*h0k0), join(*h0k1))  # [..., t, half, k]
    k_h1 = join(join(*h1k0), join(*h1k1))
    a = join(k_h0, k_h1)  # [..., t, half, k, h]
    a = a.permute(*range(a.dim() - 4), -1, -2, -4, -3)  # [..., h, k, t, half]
    return a.reshape(*a.shape[:-4], 32)


def with_zeros(v: torch.Tensor) -> torch.Tensor:
    """`_with_zeros`: [B, 1, a, b] -> [B, 8 * a * b] float16 columns: n = 0 hi, n = 1 lo, the rest zeros."""
    hi = v.float().half()
    lo = (v.float() - hi.float()).half()
    z = torch.zeros_like(hi)
    n8 = join(join(join(hi, z), join(z, z)), join(join(lo, z), join(z, z)))  # [B, 1, a, b, x0, x1, x2]
    n8 = n8.permute(0, 1, 4, 5, 6, 2, 3)
    return n8.reshape(v.shape[0], 8 * v.shape[2] * v.shape[3]).double()


def b_tile(raw: torch.Tensor) -> torch.Tensor:
    """`_b_tile`: a block's stored [256] -> its [32, 8] B operand."""
    return raw.reshape(8, 4, 2, 2, 2).permute(2, 3, 1, 4, 0).reshape(32, 8)


def activations(x: torch.Tensor, per_pow2: int) -> tuple[torch.Tensor, float]:
    """`_activations`: the range padded with zeros to per_pow2 blocks, scaled by 2^(14 - e)."""
    xr = torch.zeros(per_pow2 * 32, dtype=torch.float32)
    xr[: x.numel()] = x
    amax = xr.abs().max()
    e = int(((amax.view(torch.int32) >> 23) & 0xFF) - 127)
    up = 2.0 ** (14 - max(-100, min(100, e)))
    return xr * up, up


def stored_activations(xs: torch.Tensor, per_pow2: int, kind: str) -> torch.Tensor:
    """The prologue's shared buffer [per_pow2, 256]: each block's activations in its K order."""
    if kind in ("q4_k", "q8_0"):  # a Q4_K sub-block's: natural 8t + 4u + 2r + s stored at 8t + 4u + 2s + r
        xb = xs.reshape(per_pow2, 4, 2, 2, 2).permute(0, 1, 2, 4, 3)
    else:  # MXFP4: natural 16h + 4t + 2 half + k stored at 8t + 4h + 2k + half
        xb = xs.reshape(per_pow2, 2, 4, 2, 2).permute(0, 2, 1, 4, 3)
    return with_zeros(xb.reshape(per_pow2, 1, 4, 8))


def walk(w: QTensor, x: torch.Tensor, kind: str, stored_as: str | None = None) -> torch.Tensor:
    """The kernel's sums for every row, the whole row one program's walk (split-K only regroups sums);
    `stored_as`: the activations stored in another kind's order (the failing check)."""
    rows, width = w.shape
    n_blocks = width // 32
    data = w.data
    per_pow2 = 1 << (n_blocks - 1).bit_length()
    xs, up = activations(x.reshape(-1), per_pow2)
    smem = stored_activations(xs, per_pow2, stored_as or kind)
    if kind == "q8_0":
        words = data[: rows * n_blocks * 32].view(torch.int32).to(torch.int64).reshape(rows, n_blocks, 4, 2)
        d = data[rows * n_blocks * 32 :].view(torch.float16).double().reshape(rows, n_blocks)
        a = a_of_bytes(*q8_0_codes(words))  # [rows, blocks, 32]
        scale, walk_scale = d, up
    else:
        words = data[: rows * n_blocks * 16].view(torch.int32).to(torch.int64).reshape(rows, n_blocks, 4)
        e = data[rows * n_blocks * 16 :].to(torch.int64).reshape(rows, n_blocks)
        bits = torch.where(e < 2, (e + 1) * 0x00200000, (e - 1) << 23).to(torch.int32)
        scale = bits.view(torch.float32).double()
        a = mxfp4_a_tile(words)
        walk_scale = up / 32768.0
    total = torch.zeros(rows, dtype=torch.float64)
    for blk in range(n_blocks):
        product = a[:, blk, :] @ b_tile(smem[blk])  # the mma: [rows, 8]
        total += (product * scale[:, blk : blk + 1]).sum(dim=1)
    return total / walk_scale


def scale_and_min(s1, s2, s3, j: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Sub-block j's 6-bit scale and min from a Q4_K super-block's scale words 1-3 (get_scale_min_k4)."""
    if j < 4:
        return (s1 >> (8 * j)) & 0x3F, (s2 >> (8 * j)) & 0x3F
    scale = ((s3 >> (8 * (j - 4))) & 0x0F) | (((s1 >> (8 * (j - 4) + 6)) & 0x3) << 4)
    m = ((s3 >> (8 * (j - 4) + 4)) & 0x0F) | (((s2 >> (8 * (j - 4) + 6)) & 0x3) << 4)
    return scale, m


def q4_k_walk(w: QTensor, x: torch.Tensor) -> torch.Tensor:
    """`_q4_k_walk`'s sums (the layout the GPU has run: this calibrates the re-statement): eight sub-block
    mmas a super-block scaled by d x scale; the mins' term as its arithmetic (its own layout is Q4_K's)."""
    rows, width = w.shape
    n_sb = width // 256
    words = w.data.view(torch.int32).to(torch.int64).reshape(rows, n_sb, 36) & 0xFFFFFFFF
    xs, up = activations(x.reshape(-1), n_sb * 8)
    smem = stored_activations(xs, n_sb * 8, "q4_k")
    total = torch.zeros(rows, dtype=torch.float64)
    for sb in range(n_sb):
        sw = words[:, sb]
        d, dmin = f16_halves(sw[:, 0])
        s1, s2, s3 = sw[:, 1], sw[:, 2], sw[:, 3]
        for c in range(4):
            chunk = sw[:, 4 + 8 * c : 12 + 8 * c].reshape(rows, 4, 2)  # lane t: words 2t, 2t + 1
            for h in range(2):
                j = 2 * c + h
                pairs = (*code_pairs(chunk, 4 * h), *code_pairs(chunk, 4 * h + 8))
                a = a_of_bytes(pairs[0], pairs[1], pairs[2], pairs[3])
                scale, m = scale_and_min(s1, s2, s3, j)
                product = (a @ b_tile(smem[sb * 8 + j])).sum(dim=1)
                block_sum = xs[sb * 256 + 32 * j : sb * 256 + 32 * j + 32].double().sum()
                total += d * scale.double() * product - dmin * m.double() * block_sum
    return total / up


def regrouped(qtype: GGMLType, shape: tuple[int, int], rng, blocks) -> QTensor:
    raw = blocks(qtype, shape[0] * shape[1] // 32, rng, realistic=True)
    return QTensor.from_bytes(raw.tobytes(), qtype, shape, "w").codes_then_scales_in_place()


@pytest.mark.parametrize("shape", [(8, 32), (16, 96), (24, 2880)], ids=lambda v: f"{v[0]}x{v[1]}")
@pytest.mark.parametrize(
    ("qtype", "kind"), [(GGMLType.Q8_0, "q8_0"), (GGMLType.MXFP4, "mxfp4")], ids=["Q8_0", "MXFP4"]
)
def test_the_operands_multiply_each_code_with_its_own_activation(qtype, kind, shape, rng, blocks) -> None:
    w = regrouped(qtype, shape, rng, blocks)
    x = torch.from_numpy(rng.normal(0.0, 1.0, (1, shape[1])).astype(np.float32))
    want = reference_qmatmul(x, w, None, torch.float32).double().reshape(-1)
    got = walk(w, x, kind)
    assert float((got - want).abs().max() / want.abs().max()) < REL_TOL


def test_the_re_statement_gives_the_q4_k_walk_the_gpu_has_run(rng, blocks) -> None:
    """The same re-statement of Q4_K, whose kernel the CUDA tests passed: it checks the re-statement (joins,
    permutes, the float16 tricks) as much as the kernel."""
    raw = blocks(GGMLType.Q4_K, 24 * 768 // 256, rng, realistic=True)
    w = QTensor.from_bytes(raw.tobytes(), GGMLType.Q4_K, (24, 768), "w")
    x = torch.from_numpy(rng.normal(0.0, 1.0, (1, 768)).astype(np.float32))
    want = reference_qmatmul(x, w, None, torch.float32).double().reshape(-1)
    got = q4_k_walk(w, x)
    assert float((got - want).abs().max() / want.abs().max()) < REL_TOL


def test_a_wrong_k_order_fails_the_check(rng, blocks) -> None:
    """The check can fail: the MXFP4 activations stored in the Q8_0 order (a plausible slip) are caught."""
    w = regrouped(GGMLType.MXFP4, (16, 96), rng, blocks)
    x = torch.from_numpy(rng.normal(0.0, 1.0, (1, 96)).astype(np.float32))
    want = reference_qmatmul(x, w, None, torch.float32).double().reshape(-1)
    got = walk(w, x, "mxfp4", stored_as="q8_0")
    assert float((got - want).abs().max() / want.abs().max()) > 1e-2


def test_an_expert_is_its_share_of_the_bytes_codes_then_scales(rng, blocks) -> None:
    """The launch offsets pair m's matrix by expert_ids[m] x (the tensor's bytes / experts) and reads its
    codes, then its scales, there (`triton_gemv.launch_segments`' expert_words): each expert's share of a
    regrouped MXFP4 expert tensor walks as a matrix of its own."""
    n_expert, rows, width = 4, 16, 96
    raw = blocks(GGMLType.MXFP4, n_expert * rows * width // 32, rng, realistic=True)
    experts = QTensor.from_bytes(raw.tobytes(), GGMLType.MXFP4, (n_expert, rows, width), "e")
    experts = experts.codes_then_scales_in_place()
    share = experts.data.numel() // n_expert
    x = torch.from_numpy(rng.normal(0.0, 1.0, (1, width)).astype(np.float32))
    for e in (3, 0, 2):
        matrix = QTensor(experts.data[e * share : (e + 1) * share], GGMLType.MXFP4, (rows, width), "m")
        single = QTensor.from_bytes(
            raw.reshape(n_expert, -1)[e].tobytes(), GGMLType.MXFP4, (rows, width), "one"
        )
        want = reference_qmatmul(x, single, None, torch.float32).double().reshape(-1)
        got = walk(matrix, x, "mxfp4")
        assert float((got - want).abs().max() / want.abs().max()) < REL_TOL, e


# ---------------------------------------------------------------------------------------------------
# Q4_K on int8 mma (`_q4_k_int8_walk`, `GemvConfig.tc_int8_codes`)


def prmt2(a: torch.Tensor, b: torch.Tensor, selector: int) -> torch.Tensor:
    """PTX `prmt.b32 d, a, b, selector` with two register sources (bytes 0-3 of a, then 4-7 of b)."""
    src = [(a >> (8 * i)) & 0xFF for i in range(4)] + [(b >> (8 * i)) & 0xFF for i in range(4)]
    out = torch.zeros_like(a)
    for i in range(4):
        out |= src[(selector >> (4 * i)) & 0x7] << (8 * i)
    return out


def int8_b_words(xs: torch.Tensor, swap_u: bool = False) -> torch.Tensor:
    """`_int8_b`: the scaled activations [PER * 256] -> B words [PER * 8, 4 n, 4 t, 2 u] (32-bit patterns):
    X truncated, biased 0x80 a byte lane, each lane's top bit flipped, then `_limb_words`' byte transpose.
    `swap_u`: the words of u = 0 and 1 exchanged (the failing check)."""
    big = (xs * 32768.0).to(torch.int32).to(torch.int64)  # float32 x 2^15 exact; `.to` truncates
    z = ((big + 0x80808080) & 0xFFFFFFFF) ^ 0x80808080
    z = z.reshape(-1, 4, 2, 2, 2)  # [j, t, u, b1, b0]
    z0, z2 = z[..., 0, 0], z[..., 1, 0]
    z1, z3 = z[..., 0, 1], z[..., 1, 1]
    t0, t1 = prmt2(z0, z1, 0x5140), prmt2(z0, z1, 0x7362)
    t2, t3 = prmt2(z2, z3, 0x5140), prmt2(z2, z3, 0x7362)
    w0, w1 = prmt2(t0, t2, 0x5410), prmt2(t0, t2, 0x7632)
    w2, w3 = prmt2(t1, t3, 0x5410), prmt2(t1, t3, 0x7632)
    limbs = join(join(w0, w1), join(w2, w3)).permute(0, 4, 3, 1, 2).reshape(-1, 4, 4, 2)
    return limbs.flip(-1) if swap_u else limbs


def signed_bytes(words: torch.Tensor) -> torch.Tensor:
    """[..., ] 32-bit patterns -> [..., 4] their bytes as int8 values (byte 0 first)."""
    b = torch.stack([(words >> (8 * i)) & 0xFF for i in range(4)], dim=-1)
    return torch.where(b >= 128, b - 256, b)


def q4_k_int8_walk(w: QTensor, x: torch.Tensor, swap_u: bool = False) -> torch.Tensor:
    """`_q4_k_int8_walk`'s sums: each sub-block one m16n8k32 int8 mma of its nibbles (A's K = 16u + 4t + b:
    byte b of chunk word (t, u)) with the limb words (B's K alike, column n = limb n), scaled by the
    sub-block's scale in int32; d a super-block; the limbs weighted 256^n 2^-15; the mins as the other
    walk's (float16 hi + lo of the sub-block sums / 32)."""
    rows, width = w.shape
    n_sb = width // 256
    words = w.data.view(torch.int32).to(torch.int64).reshape(rows, n_sb, 36) & 0xFFFFFFFF
    xs, up = activations(x.reshape(-1), n_sb * 8)
    limbs = int8_b_words(xs, swap_u)
    acc = torch.zeros(rows, 4, dtype=torch.float64)
    mins = torch.zeros(rows, dtype=torch.float64)
    for sb in range(n_sb):
        sw = words[:, sb]
        d, dmin = f16_halves(sw[:, 0])
        s1, s2, s3 = sw[:, 1], sw[:, 2], sw[:, 3]
        acc_i = torch.zeros(rows, 4, dtype=torch.int64)
        for c in range(4):
            chunk = sw[:, 4 + 8 * c : 12 + 8 * c].reshape(rows, 4, 2)  # word (t, u) = 2t + u
            for h in range(2):
                j = 2 * c + h
                a = signed_bytes((chunk >> (4 * h)) & 0x0F0F0F0F)  # [rows, t, u, b]
                a = a.permute(0, 2, 1, 3).reshape(rows, 32)  # K = 16u + 4t + b
                b = signed_bytes(limbs[sb * 8 + j])  # [n, t, u, b]
                b = b.permute(0, 2, 1, 3).reshape(4, 32).T  # [K, n]
                scale, m = scale_and_min(s1, s2, s3, j)
                acc_i += scale[:, None] * (a @ b)
                block_sum = xs[sb * 256 + 32 * j : sb * 256 + 32 * j + 32].double().sum()
                mins += dmin * m.double() * block_sum
        assert int(acc_i.abs().max()) < 2**31  # the kernel's int32
        acc += d[:, None] * acc_i.double()
    weights = torch.tensor([2.0 ** (8 * n - 15) for n in range(4)], dtype=torch.float64)
    return ((acc * weights).sum(dim=1) - mins) / up


def test_the_int8_limbs_rebuild_each_activation_exactly(rng) -> None:
    """X = trunc(x * up * 2^15) is sum_n limb_n 256^n with signed 8-bit limbs, for activations at the top of
    the range (|x * up| just under 2^15), tiny ones and zeros."""
    x = torch.from_numpy(rng.normal(0.0, 1.0, 512).astype(np.float32))
    x[:8] = torch.tensor([0.0, -0.0, 1e-30, -1e-30, 3e-8, -3e-8, 1.0, -1.0])
    x[8] = x.abs().max() * 1.0000001  # the largest magnitude, negative next
    x[9] = -x[8]
    xs, _ = activations(x, 16)
    limbs = signed_bytes(int8_b_words(xs))  # [16 j, 4 n, 4 t, 2 u, 4 b]
    rebuilt = sum(limbs[:, n].to(torch.int64) * 256**n for n in range(4))  # [j, t, u, b]
    assert torch.equal(rebuilt.reshape(-1), (xs * 32768.0).to(torch.int32).to(torch.int64))
    assert int(limbs[:, 3].abs().max()) <= 64  # |X| < 2^30: the top limb's range


@pytest.mark.parametrize("shape", [(16, 256), (24, 768), (8, 3072)], ids=lambda v: f"{v[0]}x{v[1]}")
def test_the_int8_operands_multiply_each_code_with_its_own_activation(shape, rng, blocks) -> None:
    raw = blocks(GGMLType.Q4_K, shape[0] * shape[1] // 256, rng, realistic=True)
    w = QTensor.from_bytes(raw.tobytes(), GGMLType.Q4_K, shape, "w")
    x = torch.from_numpy(rng.normal(0.0, 1.0, (1, shape[1])).astype(np.float32))
    want = reference_qmatmul(x, w, None, torch.float32).double().reshape(-1)
    got = q4_k_int8_walk(w, x)
    assert float((got - want).abs().max() / want.abs().max()) < REL_TOL


def test_int8_limb_words_in_the_wrong_k_order_fail_the_check(rng, blocks) -> None:
    """The check can fail: B's words for u = 0 and 1 exchanged (K 4t.. against K 16 + 4t..) are caught."""
    raw = blocks(GGMLType.Q4_K, 16 * 512 // 256, rng, realistic=True)
    w = QTensor.from_bytes(raw.tobytes(), GGMLType.Q4_K, (16, 512), "w")
    x = torch.from_numpy(rng.normal(0.0, 1.0, (1, 512)).astype(np.float32))
    want = reference_qmatmul(x, w, None, torch.float32).double().reshape(-1)
    got = q4_k_int8_walk(w, x, swap_u=True)
    assert float((got - want).abs().max() / want.abs().max()) > 1e-2
