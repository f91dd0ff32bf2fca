"""The decode step over static buffers and its CUDA graph, against the plain forward and the reference kernels.

- CPU and CUDA: the static step (device position, write at that position, attention over the whole cache
  with later positions masked) gives the plain forward's logits, for every architecture.
- CUDA: a replayed graph gives exactly the logits of the same step run eagerly; the fast kernels with
  graphs produce the reference kernels' greedy tokens on the tiny fixture of every architecture and type
  mix, with logits within a stated tolerance; a session one step ahead of the host (lookahead) gives the
  tokens of one that waits for each, greedy and sampled; a graph captured with programmatic dependent
  launch (sm_90+) replays the logits of one captured without it, bit for bit.
"""

from __future__ import annotations

import dataclasses
import importlib.util

import pytest
import torch

from kernels.backend import KernelConfig
from reference_worker.decode_step import DecodeGraphs, DecodeStep
from reference_worker.engine import DecodeSession
from reference_worker.sampling import Sampler, SamplingParams
from tests.worker.llama_helpers import load_model

ARCHITECTURES = ["llama", "qwen2", "phi3", "gpt2", "gpt-oss"]
# One file per architecture and type mix the fast paths serve (the K-quant mixes, MXFP4 experts, ...).
TYPE_MIXES = ["f32", "f16", "q4_0", "q4_1", "q5_0", "q8_0", "q4_k_m"]
FIXTURES = [f"tiny/{arch}-{mix}.gguf" for arch in ARCHITECTURES for mix in TYPE_MIXES] + [
    "tiny/gpt-oss-mxfp4_moe.gguf"
]
PROMPT = [1, 5, 9, 2, 7, 3]
STEPS = 12
# Static step vs plain forward: the same sums over a longer, masked key range (float32, ~1e-7 apart).
STEP_TOL = 1e-5
# Fast kernels vs reference (CUDA): the fast GEMVs agree with the reference path to 1e-5 per matmul
# (tests/kernels); over a tiny model's layers the logits stay within this relative bound.
FAST_LOGITS_TOL = 1e-3

# A prompt longer than the GEMVs serve (8 rows): the prefill runs on a float16 tensor-core path (the GEMM
# decoding the packed tiles, kernels.triton_qgemm, or the float16 scratch + cuBLAS, kernels.triton_prefill),
# two float16 roundings per product against the float32 reference.
LONG_PROMPT = [(7 * i + 3) % 50 + 1 for i in range(40)]
PREFILL_LOGITS_TOL = 1e-2

no_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
no_triton = pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="triton is not installed")


def rel_err(got: torch.Tensor, expected: torch.Tensor) -> float:
    got, expected = got.double().cpu(), expected.double().cpu()
    return float((got - expected).abs().max() / expected.abs().max())


def decode(
    model, prompt: list[int], steps: int, step_of, *, unwritten: float | None = None
) -> tuple[list[int], list[torch.Tensor]]:
    """Greedy tokens and per-step logits: prefill with the plain forward, then `step_of(cache)` per token.
    `unwritten` fills the new cache first (NaN: what a reused allocator block may hold), so a step that
    reads a position nothing wrote shows it."""
    cache = model.new_cache(len(prompt) + steps)
    if unwritten is not None:
        cache.keys.fill_(unwritten)
        cache.values.fill_(unwritten)
    try:
        ids = torch.tensor(prompt, device=model.device)
        logits = model.forward(ids, cache, last_only=True)[0]
        step = step_of(cache)
        tokens, all_logits = [], [logits.clone()]
        for _ in range(steps):
            token = logits.argmax()
            tokens.append(int(token))
            logits = step(token.view(1))
            all_logits.append(logits.clone())
        return tokens, all_logits
    finally:
        cache.free()


def plain(model):
    return lambda cache: DecodeStep(model, cache, None)


def static(model):
    return lambda cache: DecodeStep(model, cache, None, static=True)


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_static_step_gives_the_plain_forward_logits_on_cpu(arch) -> None:
    model, _, _ = load_model(f"tiny/{arch}-f32.gguf", kernels=KernelConfig(kernels="reference"))
    want_tokens, want = decode(model, PROMPT, 6, plain(model))
    got_tokens, got = decode(model, PROMPT, 6, static(model))
    assert got_tokens == want_tokens
    for a, b in zip(got, want, strict=True):
        assert rel_err(a, b) < STEP_TOL


@pytest.mark.parametrize("arch", ARCHITECTURES)
@pytest.mark.parametrize("attention", ["reference", "sdpa"])
@pytest.mark.parametrize("unwritten", [float("nan"), float("inf")])
def test_the_static_step_reads_no_cache_position_it_has_not_written(arch, attention, unwritten) -> None:
    # The step attends over the whole capacity with later positions masked: whatever those positions
    # hold (a reused allocator block may hold NaN or Inf), the logits are the plain forward's.
    kernels = KernelConfig(kernels="reference")
    model, _, _ = load_model(f"tiny/{arch}-f32.gguf", attention=attention, kernels=kernels)
    want_tokens, want = decode(model, PROMPT, 6, plain(model))
    got_tokens, got = decode(model, PROMPT, 6, static(model), unwritten=unwritten)
    assert got_tokens == want_tokens
    for a, b in zip(got, want, strict=True):
        assert rel_err(a, b) < STEP_TOL


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_the_cpu_decode_kernels_read_no_cache_position_they_have_not_written(arch) -> None:
    # The CPU engine's static step with `kernels.cpu_decode` (the fast CPU path): same property.
    model, _, _ = load_model(f"tiny/{arch}-f32.gguf", weight_cache=True)
    want_tokens, want = decode(model, PROMPT, 6, plain(model))
    got_tokens, got = decode(model, PROMPT, 6, static(model), unwritten=float("nan"))
    assert got_tokens == want_tokens
    for a, b in zip(got, want, strict=True):
        assert rel_err(a, b) < STEP_TOL


def test_without_graphs_or_static_the_step_is_the_plain_forward(monkeypatch) -> None:
    model, _, _ = load_model("tiny/llama-f32.gguf")
    seen: list[object] = []
    real = model.forward
    monkeypatch.setattr(model, "forward", lambda *a, **kw: seen.append(kw.get("positions")) or real(*a, **kw))
    decode(model, PROMPT, 2, plain(model))
    assert seen == [None, None, None]


@pytest.mark.cuda
@no_cuda
@no_triton
@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_graph_replay_equals_the_eager_step(arch) -> None:
    model, _, _ = load_model(f"tiny/{arch}-q4_k_m.gguf", device="cuda", kernels=KernelConfig())
    graphs = DecodeGraphs(model)
    eager_tokens, eager = decode(model, PROMPT, STEPS, static(model))
    graph_tokens, replayed = decode(model, PROMPT, STEPS, lambda cache: DecodeStep(model, cache, graphs))
    assert graphs.captures == 1
    # The same kernels on the same inputs; libraries (cuBLAS for float weights) may pick another
    # algorithm inside a capture, so the logits are compared within float32 rounding, and the tokens up
    # to the first step whose two best logits are closer than that (a tie the rounding may break).
    for a, b in zip(replayed, eager, strict=True):
        assert rel_err(a, b) < STEP_TOL
    for step, (got, want) in enumerate(zip(graph_tokens, eager_tokens, strict=True)):
        top2 = eager[step].topk(2).values
        if float(top2[0] - top2[1]) <= STEP_TOL * float(eager[step].abs().max()):
            break
        assert got == want, f"step {step}"
    # A second request of the same size reuses the captured graph when its cache lands at the same place.
    decode(model, PROMPT, STEPS, lambda cache: DecodeStep(model, cache, graphs))
    assert graphs.captures <= 2


@pytest.mark.cuda
@no_cuda
@no_triton
@pytest.mark.parametrize("name", [f"tiny/{arch}-q4_k_m.gguf" for arch in ARCHITECTURES] + [FIXTURES[-1]])
def test_a_graph_captured_with_dependent_launch_replays_the_same_logits(name) -> None:
    """Programmatic dependent launch (`KernelConfig.dependent_launch`, sm_90+, with and without the GEMVs'
    weight prefetch, either trigger; and the prefetch alone) changes when each kernel starts, not what it
    computes: every kernel waits for the
    previous grid before touching memory, so the replayed logits equal those of the graph captured
    without it, bit for bit, step after step."""
    from kernels import dependent_launch

    model, _, _ = load_model(name, device="cuda", kernels=KernelConfig())
    if not dependent_launch.supported(model.device):
        pytest.skip("programmatic dependent launch needs sm_90 or later")
    modes = [
        dependent_launch.OFF,
        dependent_launch.DependentLaunch(True),
        dependent_launch.DependentLaunch(True, weight_prefetch=True),
        dependent_launch.DependentLaunch(True, late_trigger=True),
        dependent_launch.DependentLaunch(True, weight_prefetch=True, late_trigger=True),
        dependent_launch.DependentLaunch(False, weight_prefetch=True),  # prefetch, launched as usual
    ]
    runs = []
    for mode in modes:
        graphs = DecodeGraphs(model, dependent_launch=mode)
        runs.append(decode(model, PROMPT, STEPS, lambda cache, g=graphs: DecodeStep(model, cache, g)))
        assert graphs.captures == 1
    want_tokens, want = runs[0]
    for mode, (got_tokens, got) in zip(modes[1:], runs[1:], strict=True):
        assert got_tokens == want_tokens, mode
        for step, (a, b) in enumerate(zip(got, want, strict=True)):
            assert torch.equal(a, b), f"{mode}, step {step}: {rel_err(a, b)}"


@pytest.mark.cuda
@no_cuda
@no_triton
@pytest.mark.parametrize("fused_prefill", [True, False], ids=["fused-prefill", "scratch-prefill"])
@pytest.mark.parametrize(
    "name",
    ["tiny/llama-q8_0.gguf", "tiny/qwen2-q8_0.gguf", "tiny/qwen2-q4_k_m.gguf", "tiny/phi3-q4_k_m.gguf"],
)
def test_regrouped_matrices_give_the_file_orders_tokens_and_logits(name, fused_prefill) -> None:
    """`--regroup` (`KernelConfig.regroup`): the 2-D Q8_0 and Q6_K matrices stored codes, then scales (all
    of them when named, by type and size by default); the decode GEMV (graph replay), the prefill (GEMM,
    or the reference tiles beside the float16 scratch) and the embedding lookup read them. The kernels
    decode the same halfwords (the prefill tiles and the dequantizer bit for bit, tests/kernels), but the
    GEMV's float32 sums run in another order, so the logits of a long prompt and of every step are the
    file order's within the fast kernels' bound, and so are the greedy tokens up to a near-tie."""
    from kernels.qtensor import CODES_THEN_SCALES, QTensor
    from kernels.triton_gemv import regrouped_by_default

    def matrices(model) -> list[QTensor]:
        holders = [model, *model.layers]
        return [t for h in holders for t in vars(h).values() if isinstance(t, QTensor) and len(t.shape) == 2]

    runs = {}
    for regroup in ((), ("q8_0", "q6_k"), None):
        model, _, _ = load_model(
            name, device="cuda", kernels=KernelConfig(fused_prefill=fused_prefill, regroup=regroup)
        )
        regrouped = {t.name for t in matrices(model) if t.layout == CODES_THEN_SCALES}
        if regroup is None:
            assert regrouped == {t.name for t in matrices(model) if regrouped_by_default(t)}
        else:
            assert bool(regrouped) == bool(regroup), regrouped
        graphs = DecodeGraphs(model)
        runs[regroup] = decode(
            model, LONG_PROMPT, STEPS, lambda cache, m=model, g=graphs: DecodeStep(m, cache, g)
        )
    want_tokens, want = runs[()]
    for regroup in (("q8_0", "q6_k"), None):
        assert_close_logits_and_tokens(*runs[regroup], want_tokens, want, FAST_LOGITS_TOL)


def assert_close_logits_and_tokens(
    got_tokens: list[int],
    got: list[torch.Tensor],
    want_tokens: list[int],
    want: list[torch.Tensor],
    tol: float,
) -> None:
    """Every step's logits within `tol` (relative to the largest), and the greedy tokens equal up to the
    first step whose two best logits are within twice that (a near-tie either token may win)."""
    errors = [rel_err(a, b) for a, b in zip(got, want, strict=True)]
    assert all(e < tol for e in errors), f"relative logits errors per step (NaN fails): {errors}"
    for step, (a, b) in enumerate(zip(got_tokens, want_tokens, strict=True)):
        top2 = torch.topk(want[step], 2).values
        if float(top2[0] - top2[1]) <= 2 * tol * float(want[step].abs().max()):
            break
        assert a == b, f"greedy token {step} differs: {a} != {b}"


def reference_and_fast(name: str, prompt: list[int], steps: int, *, fused_prefill: bool = True):
    """(tokens, logits) of the reference kernels (plain steps) and of the fast kernels (graph replay)."""
    reference, _, _ = load_model(name, device="cuda", kernels=KernelConfig(kernels="reference"))
    want = decode(reference, prompt, steps, plain(reference))
    config = KernelConfig(kernels="fast", cuda_graphs=True, fused_prefill=fused_prefill)
    fast, _, _ = load_model(name, device="cuda", kernels=config)
    graphs = DecodeGraphs(fast)
    # The fast cache starts NaN-filled: a step that reads a position it has not written fails here, not
    # only when the caching allocator happens to hand back a poisoned block.
    nan = float("nan")
    return want, decode(fast, prompt, steps, lambda cache: DecodeStep(fast, cache, graphs), unwritten=nan)


@pytest.mark.cuda
@no_cuda
@no_triton
@pytest.mark.parametrize("name", FIXTURES)
def test_fast_kernels_with_graphs_give_the_reference_greedy_tokens(name) -> None:
    (want_tokens, want), (got_tokens, got) = reference_and_fast(name, PROMPT, STEPS)
    assert got_tokens == want_tokens
    errors = [rel_err(a, b) for a, b in zip(got, want, strict=True)]
    assert all(e < FAST_LOGITS_TOL for e in errors), f"relative logits errors per step (NaN fails): {errors}"


@pytest.mark.cuda
@no_cuda
@no_triton
@pytest.mark.parametrize("fused_prefill", [True, False], ids=["fused-prefill", "scratch-prefill"])
@pytest.mark.parametrize("name", FIXTURES)
def test_fast_prefill_gives_the_reference_logits_and_greedy_tokens(name, fused_prefill) -> None:
    (want_tokens, want), (got_tokens, got) = reference_and_fast(
        name, LONG_PROMPT, 4, fused_prefill=fused_prefill
    )
    assert_close_logits_and_tokens(got_tokens, got, want_tokens, want, PREFILL_LOGITS_TOL)


@pytest.mark.cuda
@no_cuda
@no_triton
@pytest.mark.parametrize("arch", ARCHITECTURES)
@pytest.mark.parametrize(
    "params",
    [
        SamplingParams(temperature=0.0),
        SamplingParams(temperature=0.9, top_k=20, top_p=0.9, min_p=0.02, repetition_penalty=1.1, seed=11),
    ],
    ids=["greedy", "sampled"],
)
def test_lookahead_gives_the_tokens_of_a_session_that_waits_for_each(arch, params) -> None:
    """One step ahead of the host (`KernelConfig.lookahead`): the next step and sample are enqueued before
    a token is read back through page-locked memory; the tokens equal those of a session that reads each
    token before the next step (same graphs, same seeded draws in the same order), and the session never
    forwards past the tokens it was asked for."""
    model, _, _ = load_model(f"tiny/{arch}-q4_k_m.gguf", device="cuda", kernels=KernelConfig())
    graphs = DecodeGraphs(model)

    def tokens(lookahead: bool) -> tuple[list[int], int]:
        sampler = Sampler(params, model.config.vocab_size, history=PROMPT, device="cuda")
        session = DecodeSession(model, PROMPT, 64, sampler, graphs, lookahead=lookahead, max_tokens=STEPS)
        try:
            session.start()
            return [session.next_token() for _ in range(STEPS)], session.cache.length
        finally:
            session.free()

    waited, length = tokens(False)
    ahead, ahead_length = tokens(True)
    assert ahead == waited and ahead_length == length == len(PROMPT) + STEPS - 1


def step_form(model):
    """The model's step form called directly (no native CPU step in between): one position per call."""

    def of(cache):
        def step(token: torch.Tensor) -> torch.Tensor:
            position = torch.tensor([cache.length], device=model.device)
            logits = model.forward(token, cache, last_only=True, positions=position)[0]
            cache.advance(1)
            return logits

        return step

    return of


@pytest.mark.parametrize("arch", ["llama", "qwen2", "phi3", "gpt-oss", "gpt-oss, gate/up apart"])
def test_a_step_with_the_norms_inside_the_gemvs_gives_the_plain_forward_logits(arch, monkeypatch) -> None:
    """The step form with a kernel set whose GEMVs take the rms_norm in (the CUDA GEMV's
    `qmatmul_add_normed` / `qmatmuls_normed`, the MoE GEMV's `qmatmuls_experts_normed`) and form gate, up
    and SiLU in one call (`qmatmul_glu`; a MoE's gate, up and clamped SwiGLU: `qmatmul_experts_glu`, or
    apart where no path offers it): every norm after the first layer's comes as an `RMSNormed` from
    the previous launch (the llama family: each layer's last GEMV; GPT-OSS: the attention's output
    projection with its bias, and the experts' combination), the output norm from the last layer's.
    Here a CPU stand-in computes that seam with the reference matmul, so the model's wiring is what is
    checked (which norm weight follows which product, gate and up of separate and fused [gate; up]
    tensors, the router's and the experts' normed input); the kernels are checked under Triton's
    interpreter and on CUDA."""
    from kernels import backend
    from kernels.qmatmul import ExpertsFastPath, FastPath, RMSNormed, qmatmul_experts, reference_qmatmul

    formed: list[int] = []

    def add_normed(x, w, residual, weight, eps, bias):
        formed.append(1)
        s = residual + reference_qmatmul(x, w, bias, torch.float32)
        return RMSNormed(s, s * weight, eps)

    experts_normed: list[int] = []

    def normed_experts(h, weights, ids, biases):
        experts_normed.append(1)
        return tuple(qmatmul_experts(h.value(), w, ids, b) for w, b in zip(weights, biases, strict=True))

    experts_glus: list[int] = []

    def experts_glu(h, gate, up, ids, biases, activation):
        from reference_worker.models.gpt_oss import swiglu

        assert isinstance(h, RMSNormed) and activation is not None
        experts_glus.append(1)
        g, u = (qmatmul_experts(h.value(), w, ids, b) for w, b in zip((gate, up), biases, strict=True))
        return swiglu(g, u, *activation)

    def normed(h, weights, biases):
        return tuple(
            reference_qmatmul(h.value(), w, b, torch.float32) for w, b in zip(weights, biases, strict=True)
        )

    glus: list[int] = []

    def glu(h, w_gate, w_up):  # w_up None: w_gate holds [gate; up]
        glus.append(1)
        x = h.value() if isinstance(h, RMSNormed) else h
        if w_up is None:
            gate, up = reference_qmatmul(x, w_gate, None, torch.float32).chunk(2, dim=-1)
        else:
            gate, up = (reference_qmatmul(x, w, None, torch.float32) for w in (w_gate, w_up))
        return torch.nn.functional.silu(gate) * up

    stand_in = FastPath(
        "norms-in-gemv stand-in",
        ("cpu",),
        supports=lambda x, w: False,
        qmatmul=reference_qmatmul,
        qmatmuls_normed=normed,
        qmatmul_add_normed=add_normed,
        qmatmul_glu=glu,
    )
    experts_stand_in = ExpertsFastPath(
        "normed experts stand-in",
        ("cpu",),
        supports=lambda x, w, ids: False,
        qmatmul_experts=lambda *a: None,
        qmatmuls_experts_normed=normed_experts,
        qmatmul_experts_glu=None if arch == "gpt-oss, gate/up apart" else experts_glu,
    )
    cpu = backend.FAST_PATHS["cpu"]
    monkeypatch.setitem(
        backend.FAST_PATHS,
        "cpu",
        lambda config: dataclasses.replace(
            cpu(config),
            paths=(*cpu(config).paths, stand_in),
            experts_paths=(*cpu(config).experts_paths, experts_stand_in),
        ),
    )
    name = "tiny/gpt-oss-mxfp4_moe.gguf" if arch.startswith("gpt-oss") else f"tiny/{arch}-f32.gguf"
    model, _, _ = load_model(name)
    assert model.kernels.norms_into_gemv and model.kernels.decode is not None
    reference, _, _ = load_model(name, kernels=KernelConfig(kernels="reference"))
    want_tokens, want = decode(reference, PROMPT, 6, plain(reference))
    got_tokens, got = decode(model, PROMPT, 6, step_form(model))
    layers = model.config.n_layer
    if arch.startswith("gpt-oss"):  # the ffn norm from the output projection, the next from the combination
        assert len(formed) == 6 * layers and not glus
        fused_glu = arch == "gpt-oss"  # gate, up and SwiGLU in one call, or the normed products apart
        assert (len(experts_glus), len(experts_normed)) == ((6 * layers, 0) if fused_glu else (0, 6 * layers))
    else:
        assert len(formed) == 6 * 2 * layers  # both norms of every layer, every step
        assert len(glus) == 6 * layers  # gate, up and SiLU in one call per layer
    assert got_tokens == want_tokens
    for a, b in zip(got, want, strict=True):
        assert rel_err(a, b) < STEP_TOL
