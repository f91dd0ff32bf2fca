"""`@triton.jit` helpers for a kernel launched as thread-block clusters (`kernels.cluster_launch`; sm_90+)
whose CTAs hand their results to rank 0 through its shared memory: a static array at the same shared
address in every CTA, stores into rank 0's copy of it, and the cluster barrier that orders them.

Why stores and a barrier, not `st.async` counted on an mbarrier (`tensor_core_gemv`'s CLUSTER form): a
`tl` kernel's layouts are the compiler's, so a value may be held by several threads, and an mbarrier's
expected byte count would then be wrong (a hang). Plain remote stores of a replicated value write the
same word twice; the barrier's arrive has release and its wait acquire semantics at cluster scope, so
rank 0 reads every CTA's stores after it. Every CTA runs `cluster_array` once at its start and
`cluster_handed_over` once, outside any branch (both are `.aligned`: every thread of a warp executes them).
"""

import triton
import triton.language as tl

# Static shared memory a kernel may declare without an opt-in (sm_90: 48 KiB), less a margin for the
# compiler's own static allocations.
MAX_STATIC_WORDS = 40 * 1024 // 4


@triton.jit
def cluster_array(WORDS: tl.constexpr):
    """This CTA's static shared array of WORDS 32-bit words (the same address in every CTA of the cluster,
    so `store_to_rank0` reaches rank 0's), after this thread's arrival at the cluster barrier (relaxed: it
    only says the CTA has started; `cluster_started` waits for all of them)."""
    return tl.inline_asm_elementwise(
        f"{{ .shared .align 16 .b32 rank0_states[{WORDS}]; mov.u32 $0, rank0_states;"
        " barrier.cluster.arrive.relaxed.aligned; }",
        "=r",
        [],
        dtype=tl.int32,
        is_pure=False,
        pack=1,
    )


@triton.jit
def cluster_started():
    """Wait until every CTA of the cluster has run `cluster_array`: rank 0's array may then be written."""
    tl.inline_asm_elementwise(
        "barrier.cluster.wait.aligned; mov.u32 $0, 0;", "=r", [], dtype=tl.int32, is_pure=False, pack=1
    )


@triton.jit
def store_to_rank0(address, values):
    """Store float32 `values` at `address`es (this CTA's shared addresses in `cluster_array`'s array) of
    rank 0's array. After `cluster_started`; visible to rank 0 after `cluster_handed_over`."""
    tl.inline_asm_elementwise(
        "{ .reg .u32 at; mapa.shared::cluster.u32 at, $1, 0; st.shared::cluster.b32 [at], $2; } mov.u32 $0, 0;",
        "=r,r,r",
        [address, values],
        dtype=tl.int32,
        is_pure=False,
        pack=1,
    )


@triton.jit
def cluster_handed_over():
    """Every CTA: arrive (release: its stores to rank 0 before it) and wait for the others (acquire: rank 0
    then reads theirs). Rank 0's array stays alive until it exits, after this."""
    tl.inline_asm_elementwise(
        "barrier.cluster.arrive.release.aligned; barrier.cluster.wait.acquire.aligned; mov.u32 $0, 0;",
        "=r",
        [],
        dtype=tl.int32,
        is_pure=False,
        pack=1,
    )


@triton.jit
def shared_f32(address):
    """The float32s at this CTA's shared `address`es (volatile asm: ordered after the barrier or mbarrier
    wait before it; elementwise, so `tensor_core_gemv`'s Gluon kernel reads its cluster sums with it too)."""
    return tl.inline_asm_elementwise(
        "ld.shared.f32 $0, [$1];", "=r,r", [address], dtype=tl.float32, is_pure=False, pack=1
    )


def cluster_words(size: int, state_words: int) -> int:
    """The static array's words for `size` CTAs each handing `state_words` words to rank 0 (slot 0 unused:
    rank 0 keeps its own in registers)."""
    return size * state_words
