"""The `InferenceEngine` seam: one request in, a stream of generation events out (M0 and M0.5).

Generation is prefill once, then one step per token (the M0.5 step function, `DecodeSession`):
    session = engine.start(prompt_ids, max_positions, params)   # KV cache + sampler + prefill
    token = session.next_token()                                 # forward the previous token, sample
    session.free()                                               # always, in every outcome
With a prefix cache (`prefix_cache=True`, M1) `generate` keeps the cache of a finished request's prompt in
place of freeing it, and the next prompt that starts with the same tokens prefills only the rest.
`generate` wraps that loop with the request's contract: UTF-8-safe text (M0-W-1824), stop strings
(M0-W-1422), EOS, max_tokens, cancellation checked once per token, and errors as `ErrorEvent`s.

The prompt is tokenized raw (BOS added when the tokenizer says so, special-token text parsed), as the
spec's worker does (`use_chat_template=false`, M0 §6); `apply_chat_template=True` renders the file's
`tokenizer.chat_template` around the prompt as one user message instead.

Context: a prompt that does not fit the context is INVALID_REQUEST. Otherwise the KV cache is sized for
min(prompt + max_tokens, context) positions; generation that fills the context ends with MAX_TOKENS. A
KV cache the VRAM budget cannot hold is VRAM_OOM, retriable, and the worker stays up (M0-W-1021/1825).

Prefill (CUDA, `KernelConfig.prefill_graphs`): a prompt of up to 512 tokens is prefilled by replaying a
CUDA graph captured once per length bucket (`reference_worker.prefill_graph`), else eagerly in chunks of
`PREFILL_CHUNK` positions.

Timing (M0 seam, reported in the end event): `first_token_ms` from the start of `generate` to the first
sampled token (tokenization and prefill included); `decode_time_ms` from the end of prefill to the end.
The decode loop does no logging and one host sync per token (reading the sampled id). With lookahead
(CUDA, `KernelConfig.lookahead`) the step that forwards a sampled token is enqueued before that token is
read back: the host waits for the token's own copy only, so the GPU computes token n+1 while the host
streams token n, and a token's host work (sync, Python, launches) no longer adds to its time. The
tokens are the same: every sample is drawn in the same order from the same state; generation that ends
leaves one forwarded step unused (its KV write lies past the positions the request used).

Metrics hooks (M0.5, `metrics_hooks.py`): `request_start` once the prompt is tokenized, `first_token` at
the first sampled token, `token` for each token event the job yields, then `end` or `error`.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from typing import Any

import torch

from reference_worker.decode_step import DecodeGraphs, DecodeStep
from reference_worker.device_memory import VramOOM
from reference_worker.generation import (
    INTERNAL_MESSAGE,
    CancelToken,
    EndEvent,
    ErrorCode,
    ErrorEvent,
    GenerationEvent,
    GenerationRequest,
    PromptEvent,
    StopReason,
    TokenEvent,
)
from reference_worker.metrics_hooks import MetricsHooks, NoOpMetricsHooks
from reference_worker.models.base import ModelAdapter, largest_block_matrix_bytes
from reference_worker.models.kv_cache import KVCache, copy_prefix
from reference_worker.prefill_graph import PrefillGraphs
from reference_worker.prefix_cache import MISS, PrefixCache
from reference_worker.sampling import Sampler, SamplingParams
from reference_worker.stops import StopMatcher
from reference_worker.tokenizers import StreamDecoder

# Prompt positions per prefill forward: bounds the [n_head, chunk, positions] attention scores of a long
# prompt (a 32k-token prompt in one piece would need tens of GB for them) at no cost in exactness.
PREFILL_CHUNK = 512
# With CUDA graphs, KV caches are sized in multiples of this many positions (capped at the context), so
# requests of similar length get a cache of the same size, usually at the same address, and replay the
# decode graph captured for an earlier one instead of capturing again. A job whose bucket the budget
# cannot hold gets a cache of exactly its own positions (a capture of its own).
GRAPH_CACHE_BUCKET = 256


class InvalidPrompt(ValueError):
    pass


class DecodeSession:
    """One request's decoding state: its KV cache, sampler and the logits of the last position."""

    def __init__(
        self,
        model: ModelAdapter,
        prompt_ids: Sequence[int],
        max_positions: int,
        sampler: Sampler,
        graphs: DecodeGraphs | None = None,
        *,
        static: bool = False,
        lookahead: bool = False,
        max_tokens: int | None = None,
        prefill_graphs: PrefillGraphs | None = None,
        cache: KVCache | None = None,
    ) -> None:
        """`cache`: a cache of at least `max_positions` whose first `cache.length` positions already hold
        the prompt's (the prefix cache's); None: a new one. `lookahead`: run one step ahead of the host
        (module docstring), never beyond `max_tokens` tokens nor the cache. It pays on CUDA only (`KernelConfig.lookahead_on`); on CPU the same
        bookkeeping runs, each token read before the step ahead. `prefill_graphs`: the model's captured
        prefills, which serve the prompts they can (`PrefillGraphs.serves`)."""
        self.model = model
        self.sampler = sampler
        self.prompt_ids = list(prompt_ids)
        self.cache = model.new_cache(max_positions) if cache is None else cache
        self.prefilled = False  # the prompt's positions are all in the cache (it may be kept: PrefixCache)
        try:
            self.step = DecodeStep(model, self.cache, graphs, static=static)
        except BaseException:  # the caller frees only a session it got: the cache must not outlive this
            self.cache.free()
            raise
        self._device = sampler.device
        self._logits: torch.Tensor | None = None
        self._last: torch.Tensor | None = None  # the last sampled token, on the device
        self._lookahead = lookahead
        self._max_tokens = max_tokens
        self._prefill_graphs = prefill_graphs
        self._returned = 0
        self._ahead: torch.Tensor | None = None  # a token sampled before it was asked for
        self._ahead_error: Exception | None = None  # the step ahead failed: raised when its token is asked
        # Where a token lands for the host: page-locked, so its copy is asynchronous and ordered.
        on_cuda = lookahead and self._device.type == "cuda"
        self._host = torch.empty(1, dtype=torch.long, pin_memory=True) if on_cuda else None
        self._copied = torch.cuda.Event() if on_cuda else None  # re-recorded behind each token's copy

    def start(self, chunk: int = PREFILL_CHUNK) -> None:
        """Prefill: runs the prompt once (a captured graph's replay where one serves it, else `chunk`
        positions per forward) and keeps the last logits."""
        if self._prefill_graphs is not None:
            self._logits = self._prefill_graphs.prefill(self.prompt_ids, self.cache)
        if self._logits is None:
            # From the first position the cache does not hold yet (a reused prefix: all but the last).
            ids = torch.tensor(self.prompt_ids[self.cache.length :], dtype=torch.long, device=self._device)
            for begin in range(0, len(ids), chunk):
                self._logits = self.model.forward(ids[begin : begin + chunk], self.cache, last_only=True)[0]
        self.prefilled = True

    @property
    def room(self) -> int:
        """Tokens that can still be sampled: each one after the first needs a cache position."""
        return self.cache.capacity - self.cache.length + 1

    def next_token(self) -> int:
        self._returned += 1
        if not self._lookahead:
            return int(self._sample_next())  # the one host sync per token
        if self._ahead_error is not None:
            raise self._ahead_error
        token = self._ahead if self._ahead is not None else self._sample_next()
        if self._host is None:
            value = int(token)
        else:
            self._host.copy_(token.view(1), non_blocking=True)
            self._copied.record()
        self._ahead = None
        if self._may_step():
            try:
                self._ahead = self._sample_next()  # runs on the device while the host waits below
            except Exception as e:  # the token it forwards is not lost: the error comes with the next
                self._ahead_error = e
        if self._host is not None:
            self._copied.synchronize()  # this token's copy only, not the step enqueued after it
            value = int(self._host[0])
        return value

    def _sample_next(self) -> torch.Tensor:
        """Forwards the last sampled token (none after the prefill) and samples the next, on the device."""
        if self._last is not None:
            self._logits = self.step(self._last)
        self._last = self.sampler.sample(self._logits)
        return self._last

    def _may_step(self) -> bool:
        """Whether another token may be asked for and a step has a position for it."""
        more = self._max_tokens is None or self._returned < self._max_tokens
        cache = self.cache
        return more and cache.length < cache.capacity and cache.length < self.model.config.context_length

    def free(self) -> None:
        self.cache.free()


class InferenceEngine:
    def __init__(
        self,
        model: ModelAdapter,
        tokenizer: Any,
        *,
        metrics: MetricsHooks | None = None,
        max_context: int | None = None,
        apply_chat_template: bool = False,
        device: torch.device | str = "cpu",
        prefix_cache: bool = False,
    ) -> None:
        """`prefix_cache`: keep the last prompt's KV for a next prompt that starts the same way
        (`reference_worker.prefix_cache`, M1-PREFIX-CACHE); off, each request's cache is freed when it
        ends (M0-W-1420)."""
        self.model = model
        self.tokenizer = tokenizer
        self.metrics = metrics or NoOpMetricsHooks()
        self.max_context = min(max_context or model.config.context_length, model.config.context_length)
        self.apply_chat_template = apply_chat_template
        self.device = torch.device(device)
        self.eog_ids = frozenset(tokenizer.eog_ids) | {tokenizer.eos_id} - {None}
        self.prefix_cache = PrefixCache() if prefix_cache else None
        # The decode step as a CUDA graph when the model's kernel choice says so (kernels.backend).
        kernels = getattr(model, "kernels", None)
        graphs_on = kernels is not None and kernels.config.graphs_on(self.device)
        self.graphs = (
            DecodeGraphs(
                model,
                dependent_launch=kernels.config.dependent_launch_mode(
                    self.device, largest_block_matrix_bytes(model)
                ),
            )
            if graphs_on
            else None
        )
        prefill_graphs_on = kernels is not None and kernels.config.prefill_graphs_on(self.device)
        self.prefill_graphs = PrefillGraphs(model) if prefill_graphs_on else None
        # One decode step ahead of the host (CUDA): see the module docstring.
        self.lookahead = kernels is not None and kernels.config.lookahead_on(self.device)
        # A plain temperature draw in two kernels on the device (KernelConfig.fused_sampling).
        self.device_draw = getattr(kernels, "sample", None) if self.device.type == "cuda" else None
        if self.device_draw is not None:  # compiled at load, not on a request's first sampled token
            self.device_draw.warm_up(model.config.vocab_size, tokenizer.vocab_size, self.device)
        # On CPU the kernel set's decode-step functions (`kernels.cpu_decode`) serve the models' step form,
        # run eagerly over static buffers; adapters whose step form does not use them keep the plain one.
        self.static_step = (
            self.device.type == "cpu"
            and kernels is not None
            and kernels.decode is not None
            and getattr(model, "step_uses_decode_kernels", False)
        )

    def tokenize(self, prompt: str) -> list[int]:
        if self.apply_chat_template and self.tokenizer.chat_template:
            prompt = render_chat_template(self.tokenizer.chat_template, prompt)
        return self.tokenizer.encode(prompt, add_special=True, parse_special=True)

    def start(self, prompt_ids: Sequence[int], max_tokens: int, params: SamplingParams) -> DecodeSession:
        """Allocates the KV cache and prefills; the caller must `free()` the session."""
        if not prompt_ids:
            raise InvalidPrompt("the prompt produced no tokens")
        if len(prompt_ids) >= self.max_context:
            raise InvalidPrompt(
                f"the prompt has {len(prompt_ids)} tokens; the context holds {self.max_context} "
                "(prompt plus at least one generated token)"
            )
        needed = min(len(prompt_ids) + max_tokens - 1, self.max_context)
        sampler = Sampler(
            params,
            self.tokenizer.vocab_size,
            logits_size=self.model.config.vocab_size,
            history=prompt_ids,
            device=self.device,
            draw=self.device_draw,
        )

        def new_session(positions: int, cache: KVCache | None = None) -> DecodeSession:
            return DecodeSession(
                self.model,
                prompt_ids,
                positions,
                sampler,
                self.graphs,
                static=self.static_step,
                lookahead=self.lookahead,
                max_tokens=max_tokens,
                prefill_graphs=self.prefill_graphs,
                cache=cache,
            )

        bucketed = needed
        if self.graphs is not None:
            bucketed = min(-(-needed // GRAPH_CACHE_BUCKET) * GRAPH_CACHE_BUCKET, self.max_context)

        def fitting_session() -> DecodeSession:
            try:
                return new_session(bucketed)
            except (VramOOM, torch.OutOfMemoryError):
                if bucketed == needed:
                    raise
                # The bucket only lets requests share a captured graph: a job whose own positions fit the
                # budget is served with a cache of exactly those (M0-W-1021: VRAM_OOM only when it cannot fit).
                return new_session(needed)

        hit = self.prefix_cache.take(prompt_ids) if self.prefix_cache is not None else MISS
        kept = hit.cache  # ours: used in place, copied from, or freed (free is idempotent)
        try:
            if kept is not None and kept.capacity >= bucketed:
                session, kept = new_session(bucketed, kept), None  # in place: the shared positions stay
            else:
                try:
                    session = fitting_session()
                except (VramOOM, torch.OutOfMemoryError):
                    if kept is None:
                        raise
                    kept.free()  # the kept prefix does not fit beside this request's cache: dropped
                    kept = None
                    session = fitting_session()
                if kept is not None:
                    try:
                        copy_prefix(kept, session.cache, hit.shared)
                    except BaseException:
                        session.free()
                        raise
        finally:
            if kept is not None:
                kept.free()
        try:
            session.start()
        except BaseException:
            session.free()
            raise
        return session

    def generate(self, request: GenerationRequest, cancel: CancelToken) -> Iterator[GenerationEvent]:
        t_start = time.perf_counter()
        session: DecodeSession | None = None
        failed = False
        try:
            prompt_ids = self.tokenize(request.prompt)
            yield PromptEvent(len(prompt_ids))
            self.metrics.request_start(request.job_id, len(prompt_ids))
            session = self.start(prompt_ids, request.max_tokens, sampling_params(request))
            for event in self._decode(request, cancel, session, len(prompt_ids), t_start):
                if type(event) is TokenEvent:  # one per token event: the EOS token is never one
                    self.metrics.token(request.job_id, event.token_id)
                yield event
        except InvalidPrompt as e:
            failed = True
            yield self._error(request, ErrorCode.INVALID_REQUEST, str(e))
        except (VramOOM, torch.OutOfMemoryError) as e:
            failed = True
            yield self._error(request, ErrorCode.VRAM_OOM, f"out of device memory: {e}", retriable=True)
        except Exception as e:  # a job's failure is an event, never an exception (Generator contract)
            failed = True
            yield self._error(
                request, ErrorCode.INTERNAL, INTERNAL_MESSAGE, detail=f"{type(e).__name__}: {e}"
            )
        finally:
            if session is not None:
                self._release(session, failed)

    def _release(self, session: DecodeSession, failed: bool) -> None:
        """Frees the session's cache, or keeps it for the next prompt (the prefix cache) when its prefill
        completed and nothing failed; a cancelled or disconnected job's prompt positions are as good."""
        if self.prefix_cache is not None and session.prefilled and not failed:
            self.prefix_cache.keep(session.prompt_ids, session.cache)
        else:
            session.free()

    def _decode(
        self,
        request: GenerationRequest,
        cancel: CancelToken,
        session: DecodeSession,
        n_prompt: int,
        t_start: float,
    ) -> Iterator[GenerationEvent]:
        t_decode = time.perf_counter()
        decoder = StreamDecoder(self.tokenizer)
        stops = StopMatcher(request.stop)
        budget = min(request.max_tokens, session.room)
        first_token_ms: float | None = None
        emitted = 0
        deferred: tuple[int, str] | None = None  # an event whose text may still grow (see below)
        stop_reason, matched = StopReason.MAX_TOKENS, None
        for n in range(budget):
            if cancel.cancelled:
                yield self._error(
                    request,
                    cancel.reason,
                    f"generation stopped after {emitted} tokens: {cancel.reason.value}",
                )
                return
            token = session.next_token()
            if first_token_ms is None:
                first_token_ms = (time.perf_counter() - t_start) * 1000.0
                self.metrics.first_token(request.job_id, first_token_ms)
            if token in self.eog_ids:  # M0: the EOS token itself is not emitted
                stop_reason = StopReason.EOS
                break
            result = stops.push(decoder.push(token))
            text = result.text
            last = n == budget - 1
            if last and result.matched is None:
                tail = stops.push(decoder.flush())
                text += tail.text + ("" if tail.matched else stops.flush())
                result = tail
            if deferred is not None:
                yield TokenEvent(emitted, *deferred)
                emitted += 1
                deferred = None
            if result.matched is not None:
                stop_reason, matched = StopReason.STOP_SEQUENCE, result.matched
                if text:
                    yield TokenEvent(emitted, token, text)
                    emitted += 1
                break
            # Text held back as a possible stop-string prefix belongs to this token's event if generation
            # ends before the next one: defer the event until the next token (or the end) decides.
            if stops.holding:
                deferred = (token, text)
            else:
                yield TokenEvent(emitted, token, text)
                emitted += 1
        if deferred is not None:
            tail = stops.push(decoder.flush())
            text = deferred[1] + tail.text + ("" if tail.matched else stops.flush())
            if tail.matched is not None:
                stop_reason, matched = StopReason.STOP_SEQUENCE, tail.matched
            yield TokenEvent(emitted, deferred[0], text)
            emitted += 1
        end = EndEvent(
            tokens_out=emitted,
            stop_reason=stop_reason,
            decode_time_ms=round((time.perf_counter() - t_decode) * 1000.0),
            prompt_tokens=n_prompt,
            first_token_ms=first_token_ms,
            stop_sequence_matched=matched,
        )
        self.metrics.end(request.job_id, end)
        yield end

    def _error(
        self,
        request: GenerationRequest,
        code: ErrorCode,
        message: str,
        retriable: bool = False,
        detail: str | None = None,
    ) -> ErrorEvent:
        event = ErrorEvent(code, message, retriable, detail)
        self.metrics.error(request.job_id, event)
        return event


def sampling_params(request: GenerationRequest) -> SamplingParams:
    return SamplingParams(
        temperature=request.temperature,
        top_k=request.top_k,
        top_p=request.top_p,
        min_p=request.min_p,
        repetition_penalty=request.repetition_penalty,
        seed=request.seed,
    )


def render_chat_template(template: str, prompt: str) -> str:
    """The file's chat template around `prompt` as one user message, with the assistant turn opened."""
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    return env.from_string(template).render(
        messages=[{"role": "user", "content": prompt}], add_generation_prompt=True, bos_token="", eos_token=""
    )
