"""The one-token decode step over static buffers, run eagerly or replayed as a captured CUDA graph.

A decode step forwards one token at one position. `DecodeStep` keeps the token and the position in
device buffers allocated once and calls the model's step form of `forward` (`positions=` a device
tensor: the KV write goes to that position, attention runs over the whole cache with later positions
masked, nothing is read back to the host), so every address and shape is the same from one step to the
next. With `graphs=True` the step is captured as a `torch.cuda.CUDAGraph` at its first call (after one
eager run on a side stream, which compiles the Triton kernels and settles the allocator) and replayed
for every later token: a few host->device writes and one replay instead of hundreds of launches. The
only host sync of a token stays where it was: the caller reading the sampled id.

A graph holds the addresses of the cache it was captured on. `DecodeGraphs` keeps the last few graphs
of a model keyed by those addresses, so a request whose cache lands where an earlier one was (the
caching allocator hands the same block back for the same size) replays without capturing again.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

import torch

from kernels.dependent_launch import OFF, DependentLaunch, programmatic
from reference_worker.models.kv_cache import ContiguousKVCache, KVCache

MAX_GRAPHS = 4  # captured steps kept per model (one per recent cache address and size)


class _Captured:
    """One captured step: its input buffers, its graph and the logits buffer the graph writes."""

    def __init__(
        self, model: Any, cache: ContiguousKVCache, *, dependent_launch: DependentLaunch = OFF
    ) -> None:
        device = cache.keys.device
        self.dependent_launch = dependent_launch
        self.token = torch.zeros(1, dtype=torch.long, device=device)
        self.position = torch.zeros(1, dtype=torch.long, device=device)
        self.graph: torch.cuda.CUDAGraph | None = None
        self.logits: torch.Tensor | None = None
        self.model = model
        self.cache = cache

    def forward(self) -> torch.Tensor:
        return self.model.forward(self.token, self.cache, last_only=True, positions=self.position)[0]

    def capture(self) -> None:
        self.graph, self.logits = capture_graph(
            self.forward, self.token.device, dependent_launch=self.dependent_launch
        )


def capture_graph(
    forward: Any,
    device: torch.device,
    *,
    side: Any = None,
    pool: Any = None,
    capture_error_mode: str = "global",
    dependent_launch: DependentLaunch = OFF,
) -> tuple[torch.cuda.CUDAGraph, Any]:
    """`forward()` captured as a CUDA graph, and the output its replays write. First a warm-up on a side
    stream (PyTorch's rule before capture: compiles the Triton kernels, fills the allocator's pools),
    computing what a replay computes, so its cache writes are harmless. `side`: the stream to warm up on
    (default a new one); `pool`: a memory pool shared with other graphs that never run at once.
    `dependent_launch`: how the kernels that take part are captured (`kernels.dependent_launch`: early,
    with or without weight prefetch), warm-up included, so it compiles the kernels the graph launches."""
    side = side if side is not None else torch.cuda.Stream(device=device)
    with programmatic(dependent_launch):
        side.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(side):
            forward()
        torch.cuda.current_stream(device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=pool, capture_error_mode=capture_error_mode):
            out = forward()
    return graph, out


class DecodeGraphs:
    """The captured decode steps of one model, most recently used last."""

    def __init__(
        self, model: Any, max_graphs: int = MAX_GRAPHS, *, dependent_launch: DependentLaunch = OFF
    ) -> None:
        """`dependent_launch`: how the steps are captured (`KernelConfig.dependent_launch_mode`)."""
        self.model = model
        self.max_graphs = max_graphs
        self.dependent_launch = dependent_launch
        self._steps: OrderedDict[tuple[int, int, int], _Captured] = OrderedDict()
        self.captures = 0  # how many graphs were captured (a replayed one is not counted again)

    def step_for(self, cache: ContiguousKVCache) -> _Captured:
        key = (cache.keys.data_ptr(), cache.values.data_ptr(), cache.capacity)
        step = self._steps.get(key)
        if step is not None and step.cache is not cache:
            step.cache = cache  # same memory, a new request: the graph reads and writes it in place
        if step is None:
            step = _Captured(self.model, cache, dependent_launch=self.dependent_launch)
            self._steps[key] = step
            while len(self._steps) > self.max_graphs:
                self._steps.popitem(last=False)
        self._steps.move_to_end(key)
        return step


class DecodeStep:
    """Forwards one token per call on `cache`: a captured graph when `graphs` is given and the cache is
    contiguous on CUDA; the static step run eagerly when `static` is asked for (to compare with the
    graph); otherwise the model's plain forward, exactly as without this class."""

    def __init__(
        self, model: Any, cache: KVCache, graphs: DecodeGraphs | None, *, static: bool = False
    ) -> None:
        self.model = model
        self.cache = cache
        contiguous = isinstance(cache, ContiguousKVCache)
        self._graphs = graphs if contiguous and cache.keys.is_cuda else None
        self._eager = _Captured(model, cache) if static and contiguous and self._graphs is None else None
        # CPU: the model's one-call step (kernels/cpu_step.py) from the token id, without the step form's
        # buffers and preamble; the same function as `forward(..., positions=)` there.
        native = getattr(model, "native_step", None) if self._eager is not None else None
        self._native = native if native is not None and native.serves(cache) else None

    @property
    def uses_graph(self) -> bool:
        return self._graphs is not None

    def __call__(self, token: torch.Tensor) -> torch.Tensor:
        """Logits float32 `[vocab]` after `token` (a device tensor of one id) at the next position."""
        cache = self.cache
        if self._graphs is None and self._eager is None:
            return self.model.forward(token.view(1), cache, last_only=True)[0]
        cache.check_room(1)
        if cache.length + 1 > self.model.config.context_length:
            raise ValueError(
                f"position {cache.length + 1} exceeds the context length {self.model.config.context_length}"
            )
        if self._native is not None:
            logits = self._native.step_token(int(token), cache, cache.length)
            cache.advance(1)
            return logits[0]
        step = self._eager if self._graphs is None else self._graphs.step_for(cache)
        step.token.copy_(token.view(1))
        step.position.fill_(cache.length)
        if self._graphs is None:
            logits = step.forward()
        else:
            if step.graph is None:
                step.capture()
                self._graphs.captures += 1
            step.graph.replay()
            logits = step.logits
        cache.advance(1)
        return logits
