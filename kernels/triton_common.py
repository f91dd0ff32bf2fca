"""`@triton.jit` helpers shared by the Triton kernels and the Gluon kernel of `kernels.tensor_core_gemv`:
programmatic dependent launch's prologue and trigger (`kernels.dependent_launch`), a segment launch's
index arithmetic and the GLU epilogue.
Elementwise and scalar code only (no `tl.arange` outside the prefetch, which a Gluon kernel does not
ask for): a Gluon kernel calls them as they are."""

import triton
import triton.language as tl

PREFETCH_LINE = tl.constexpr(128)  # bytes of an L2 line a `prefetch.global.L2` brings in
MAX_PREFETCH_LINES = 1024  # lines one program asks for before it waits (128 KiB)


@triton.jit
def _prefetch_l2(address):
    """A hint to bring the line at `address` (an int64 tensor of addresses) into L2: no data reaches the
    program and nothing is written, so it is safe before waiting for the previous grid."""
    return tl.inline_asm_elementwise(
        "prefetch.global.L2 [$1]; // dummy $0", "=r,l", [address], dtype=tl.int32, is_pure=False, pack=1
    )


@triton.jit
def prefetch_share(prefetch_from, prefetch_bytes, PREFETCH_LINES: tl.constexpr, also_at, ALSO: tl.constexpr):
    """Ask L2 for up to PREFETCH_LINES lines of the `prefetch_bytes` bytes at `prefetch_from` (a byte
    pointer), addresses clamped into the range; with ALSO as many again `also_at` bytes further."""
    offsets = tl.arange(0, PREFETCH_LINES).to(tl.int64) * PREFETCH_LINE
    lines = prefetch_from + tl.minimum(offsets, tl.maximum(prefetch_bytes - 1, 0))
    _prefetch_l2(lines.to(tl.int64, bitcast=True))
    if ALSO:
        _prefetch_l2((lines + also_at).to(tl.int64, bitcast=True))


@triton.jit
def await_previous_grid(
    PDL: tl.constexpr,
    prefetch_from=None,
    prefetch_bytes=0,
    PREFETCH_LINES: tl.constexpr = 0,
    also_at=0,
    ALSO: tl.constexpr = False,
):
    """The first memory statement of a kernel that takes part in dependent launch: with `PDL` (launched
    early, `dependent_launch.launch_kwargs`), wait until the previous grid has completed and its writes
    are visible, before any load or store of this program (a write of the previous kernel, or a buffer it
    still reads), then with `PDL` = TRIGGER_AT_WAIT let the next kernel launch (TRIGGER_LATE:
    `launch_next_grid_late`, or at exit). Every program waits, so this grid completes only after
    the previous one: the order holds through a chain of early launches. With `PREFETCH_LINES` (weights,
    which no kernel of a step writes): first ask L2 for up to that many lines of the `prefetch_bytes`
    bytes at `prefetch_from` (a byte pointer), so the weight tile streams in while the previous kernel
    runs (`dependent_launch.weight_prefetch`); with `ALSO`, as many again `also_at` bytes further (the
    up rows of a gate/up launch). Addresses are clamped into the range: no branch, every program reaches
    the wait."""
    if PREFETCH_LINES > 0:  # also without PDL: the whole tile requested at once
        prefetch_share(prefetch_from, prefetch_bytes, PREFETCH_LINES, also_at, ALSO)
    if PDL:
        tl.extra.cuda.gdc_wait()
        if PDL == 1:  # dependent_launch.TRIGGER_AT_WAIT
            tl.extra.cuda.gdc_launch_dependents()


@triton.jit
def launch_next_grid_late(PDL: tl.constexpr):
    """With `PDL` = dependent_launch.TRIGGER_LATE: let the next kernel launch from here (a program that
    never reaches it does so at exit)."""
    if PDL == 2:
        tl.extra.cuda.gdc_launch_dependents()


@triton.jit
def gated(gate, up, OAI: tl.constexpr, alpha, limit):
    """The GLU epilogue: silu(gate) * up, or with `OAI` gpt-oss's clamped SwiGLU (the gate clamped from
    above, the linear half on both sides and shifted by one: `reference_worker.models.gpt_oss.swiglu`)."""
    if OAI:
        g = tl.minimum(gate, limit)
        u = tl.minimum(tl.maximum(up, -limit), limit)
        return g * tl.sigmoid(alpha * g) * (u + 1.0)
    return gate * tl.sigmoid(gate) * up


@triton.jit
def segment_of(
    tile, n_rows, seg_w1, seg_w2, seg_b1, seg_b2, rows1, rows2, tile1, tile2, SEGMENTS: tl.constexpr
):
    """Where row tile `tile` of a launch over 1-3 weights lies (the grid's tiles run through the segments in
    order, segment i from tile i): (its tile within its weight, its first column of y, its weight's offset
    from segment 0's in load words, its bias's in elements, its weight's rows). Index arithmetic only."""
    local_tile = tile
    col0 = tile * 0
    w_off = tile.to(tl.int64) * 0
    b_off = w_off
    if SEGMENTS > 1:
        in1 = tile >= tile1
        in2 = tile >= tile2
        local_tile = tl.where(in2, tile - tile2, tl.where(in1, tile - tile1, tile))
        col0 = tl.where(in2, n_rows + rows1, tl.where(in1, n_rows, 0))
        w_off = tl.where(in2, seg_w2.to(tl.int64), tl.where(in1, seg_w1.to(tl.int64), 0))
        b_off = tl.where(in2, seg_b2.to(tl.int64), tl.where(in1, seg_b1.to(tl.int64), 0))
        n_rows = tl.where(in2, rows2, tl.where(in1, rows1, n_rows))
    return local_tile, col0, w_off, b_off, n_rows


@triton.jit
def rms_over(row, n, eps, offsets, BLOCKS: tl.constexpr = 0):
    """rms_norm's float32 denominator sqrt(mean(row^2) + eps) of the `n` values at `row`, read
    `offsets.shape[0]` at a time at `offsets` (0, 1, ...; a Gluon caller's carry its layout). `BLOCKS`:
    where the caller knows at compile time how many reads cover the row (n <= BLOCKS * the block), they
    are unrolled, so all of the row is asked for at once (one L2 round trip, not one a block, in a tail
    that waits on it); 0, a loop. The same squares summed in the same order either way (the interpreter
    gives the same bits; on the GPU, the decode step the same greedy tokens: bits not compared there)."""
    squares = (offsets * 0).to(tl.float32)  # zeros in the offsets' layout (no `tl.zeros` in Gluon)
    if BLOCKS > 0:
        for b in tl.static_range(BLOCKS):
            start = b * offsets.shape[0]
            v = tl.load(row + start + offsets, mask=start + offsets < n, other=0.0)
            squares += v * v
    else:
        for start in range(0, n, offsets.shape[0]):
            v = tl.load(row + start + offsets, mask=start + offsets < n, other=0.0)
            squares += v * v
    return tl.sqrt_rn(tl.sum(squares, axis=0) / n + eps)


@triton.jit
def routed_sum(residual, down, route_weights, width, cols, mask, K: tl.constexpr, CACHE: tl.constexpr):
    """A MoE's output for one token at `cols`: `residual` plus its K expert rows (`down`, `width` apart)
    weighted by their routing weights (K float32 at `route_weights`), summed in expert order. Every kernel
    that forms this sum calls here, so they give the same bits (`triton_decode.moe_combine`, the down
    GEMV's epilogue of `triton_gemv`); `CACHE`: the rows' load cache modifier ("" or ".cg" for rows
    stored by other programs of the same launch, past a stale L1)."""
    total = tl.zeros_like(residual)
    for j in tl.static_range(K):
        w = tl.load(route_weights + j)
        total += w * tl.load(down + j * width + cols, mask=mask, other=0.0, cache_modifier=CACHE)
    return residual + total
