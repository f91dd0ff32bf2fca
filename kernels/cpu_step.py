"""The decode step of a llama / qwen2 / phi3 model in one C call on the CPU (`kernels/cpu_step.c`).

A tiny model's Python step (`kernels/cpu_decode.py` around the native GEMVs) spends most of its time in
the boundaries of a hundred PyTorch calls per token; the C step does the same float32 work with none.
`NativeStep.for_model` builds, once at load, a table of the model's dimensions and of pointers to what
the step reads where it already lives: the stored weight blocks, the float32 norms and biases, the RoPE
tables. The KV cache stays the engine's tensor (written at the position, read back by the attention),
so `/health`'s accounting is unchanged; the step's own scratch is a few activation rows plus one score
per position of the context (`step_work_floats`: 0.2 MB for a 32k context), host memory allocated once.

`DecodeStep` (`reference_worker/decode_step.py`) calls it in place of the model's step form
(`forward(..., positions=)`) on CPU with the fast kernels when every matrix has a native GEMV (Q4_0,
Q4_1, Q5_0, Q8_0, Q4_K, Q6_K) and the cache is contiguous float32; otherwise `for_model` returns None
and the Python step form serves as before. Checked against the reference
forward in `tests/kernels/test_cpu_step.py`.
"""

from __future__ import annotations

import ctypes
from typing import Any

import torch

from kernels import cpu_native
from kernels.cpu_dense import dense_weight
from kernels.qtensor import QTensor


class _Matrix(ctypes.Structure):
    _fields_ = [
        ("data", ctypes.c_void_p),
        ("type", ctypes.c_int32),
        ("rows", ctypes.c_int64),
        ("cols", ctypes.c_int64),
        ("bias", ctypes.c_void_p),
    ]


class _Layer(ctypes.Structure):
    _fields_ = [
        ("attn_norm", ctypes.c_void_p),
        ("ffn_norm", ctypes.c_void_p),
        *((name, _Matrix) for name in ("q", "k", "v", "qkv", "out", "gate", "up", "gate_up", "down")),
    ]


class _Model(ctypes.Structure):
    _fields_ = [
        *(
            (name, ctypes.c_int64)
            for name in ("dim", "n_layer", "n_head", "n_head_kv", "head_dim", "ffn_dim")
        ),
        ("rope_half", ctypes.c_int64),
        ("capacity", ctypes.c_int64),
        ("norm_eps", ctypes.c_float),
        ("scale", ctypes.c_float),
        ("neox", ctypes.c_int32),
        ("rope_cos", ctypes.c_void_p),
        ("rope_sin", ctypes.c_void_p),
        ("layers", ctypes.POINTER(_Layer)),
        ("output_norm", ctypes.c_void_p),
        ("output", _Matrix),
    ]


def _ptr(t: torch.Tensor | None) -> int | None:
    return None if t is None else t.data_ptr()


def _matrix(w: QTensor | None, bias: torch.Tensor | None = None) -> _Matrix:
    if w is None:
        return _Matrix()  # rows == 0: "not this form" (fused q/k/v or gate/up)
    return _Matrix(w.data.data_ptr(), int(w.qtype), w.shape[0], w.shape[1], _ptr(bias))


def _served(w: QTensor | None) -> bool:
    return w is None or (w.qtype in cpu_native.FUNCTIONS and len(w.shape) == 2 and w.device.type == "cpu")


class NativeStep:
    """The step form of `LlamaModel.forward` for one token in one C call: `step_token(token id, cache,
    position)` or `(embedding row, cache, position)` -> logits `[1, vocab]` float32, K/V written at
    `position`."""

    def __init__(self, model: Any, lib: ctypes.CDLL) -> None:
        cfg = model.config
        # The table points into tensors the model keeps for its life (norms, biases: float32, contiguous).
        layers = (_Layer * cfg.n_layer)()
        for i, b in enumerate(model.layers):
            layers[i] = _Layer(
                _ptr(b.attn_norm),
                _ptr(b.ffn_norm),
                *(
                    (_matrix(None),) * 3 + (_matrix(b.wqkv, b.bqkv),)
                    if b.fused_qkv
                    else (_matrix(b.wq, b.bq), _matrix(b.wk, b.bk), _matrix(b.wv, b.bv), _matrix(None))
                ),
                _matrix(b.wo, b.bo),
                *(
                    (_matrix(None), _matrix(None), _matrix(b.w_up))
                    if b.fused_gate_up
                    else (_matrix(b.w_gate), _matrix(b.w_up), _matrix(None))
                ),
                _matrix(b.w_down),
            )
        self.layers = layers  # the table's layer entries; `table` and these are what the C step reads
        self.table = _Model(
            cfg.dim,
            cfg.n_layer,
            cfg.n_head,
            cfg.n_head_kv,
            cfg.head_dim,
            cfg.ffn_dim,
            model.rope_cos.shape[-1],
            0,  # capacity: the context's to size the scratch below, then each call's cache
            cfg.norm_eps,
            model.scale,
            int(cfg.rope_neox),
            model.rope_cos.data_ptr(),
            model.rope_sin.data_ptr(),
            layers,
            model.output_norm.data_ptr(),
            _matrix(model.output),
        )
        self._step = lib.model_step
        self._step.restype = ctypes.c_int
        pointer = ctypes.c_void_p
        self._step.argtypes = [
            ctypes.POINTER(_Model),
            pointer,
            pointer,
            pointer,
            ctypes.c_int64,
            pointer,
            pointer,
        ]
        self._step_token = lib.model_step_token
        self._step_token.restype = ctypes.c_int
        self._step_token.argtypes = [
            ctypes.POINTER(_Model),
            pointer,
            ctypes.c_int64,
            *self._step.argtypes[1:],
        ]
        work_floats = lib.step_work_floats
        work_floats.restype = ctypes.c_int64
        work_floats.argtypes = [ctypes.POINTER(_Model)]
        # Scratch for the longest cache (one score per position), allocated once. The logits are a new
        # tensor per step: callers may keep a step's logits (the oracle's teacher-forced rows do).
        self.table.capacity = cfg.context_length
        self._work = torch.empty(work_floats(ctypes.byref(self.table)), dtype=torch.float32)
        self._vocab = model.output.shape[0]
        self._table_ref = ctypes.byref(self.table)
        # `step_token` reads the token's row from the fast path's float16 copy of the embedding table (the
        # rows `qembedding` gives there); without that copy it looks the row up through the kernel set.
        # (The copies are made after the model is built, so the table is looked up at the first step.)
        self._token_embd, self._qembedding = model.token_embd, model.kernels.qembedding
        self._embedding: torch.Tensor | None = None
        self._x = torch.empty(cfg.dim, dtype=torch.float32)

    @classmethod
    def for_model(cls, model: Any) -> NativeStep | None:
        """The one-call step for `model`, or None where the C library or a matrix's GEMV is missing."""
        lib = cpu_native.library()
        if lib is None or model.device.type != "cpu":
            return None
        matrices = [model.output]
        for b in model.layers:
            if b.fused_qkv:
                matrices.append(b.wqkv)
            else:
                matrices += [b.wq, b.wk, b.wv]
            matrices += [b.wo, b.w_gate, b.w_up, b.w_down]
        if not all(_served(w) for w in matrices):
            return None
        return cls(model, lib)

    def serves(self, cache: Any) -> bool:
        keys = getattr(cache, "keys", None)
        return (
            isinstance(keys, torch.Tensor)
            and keys.dtype == torch.float32
            and keys.is_contiguous()
            and cache.values.is_contiguous()
            and keys.shape == cache.values.shape
        )

    def __call__(self, embedding: torch.Tensor, cache: Any, position: int) -> torch.Tensor:
        """`embedding`: the token's row `[dim]` float32 (consumed); returns logits `[1, vocab]`."""
        x = embedding.reshape(-1).contiguous()
        return self._run(self._step, (x.data_ptr(),), cache, position)

    def step_token(self, token: int, cache: Any, position: int) -> torch.Tensor:
        """The step of `forward` from a token id (the decode loop's sampled id): its embedding row, then
        `__call__`'s work, in one C call where the float16 embedding copy exists. Logits `[1, vocab]`."""
        embedding = self._embedding
        if embedding is None:
            embedding = self._embedding = _float16_rows(self._token_embd, len(self._x))
            if embedding is None:
                ids = torch.tensor([token], dtype=torch.long)
                return self(self._qembedding(ids, self._token_embd).float(), cache, position)
        if not 0 <= token < embedding.shape[0]:
            raise IndexError(f"token id {token} outside the embedding table [0, {embedding.shape[0]})")
        return self._run(self._step_token, (embedding.data_ptr(), token, self._x.data_ptr()), cache, position)

    def _run(self, entry: Any, inputs: tuple[int, ...], cache: Any, position: int) -> torch.Tensor:
        """One call of a C entry point: `inputs` (what it steps from), then the cache, the position, a new
        logits tensor and the scratch."""
        keys = cache.keys
        logits = torch.empty(1, self._vocab, dtype=torch.float32)
        self.table.capacity = keys.shape[2]
        done = entry(
            self._table_ref,
            *inputs,
            keys.data_ptr(),
            cache.values.data_ptr(),
            position,
            logits.data_ptr(),
            self._work.data_ptr(),
        )
        if done != 0:  # `for_model` checked every type; this is a broken table, not a user error
            raise RuntimeError("the native decode step met a matrix type without a GEMV")
        return logits


def _float16_rows(w: QTensor, dim: int) -> torch.Tensor | None:
    """The fast path's float16 copy of the embedding table `w` when the C step can read it, else None."""
    dense = dense_weight(w)
    if dense is None or dense.dtype != torch.float16 or not dense.is_contiguous() or dense.shape[1] != dim:
        return None
    return dense
