"""The physics of batch-1 decode: weight bytes read per token, and what that means against a bandwidth.

Decode at batch 1 streams every weight the token touches from device memory once per token, so
`tok/s <= bandwidth / bytes_per_token` (the floor on time per token), and `bytes_per_token * tok/s` is
the bandwidth a decoder achieves (gpt-fast's "Bandwidth achieved").
"""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path
from typing import Any

from reference_worker.gguf import GGUFFile


def weight_traffic(path: Path) -> dict[str, Any]:
    """The file's tensor bytes and the weight bytes one decoded token reads (batch 1).

    Every tensor is read once per token, except: `token_embd` gives one row (a gather) unless it is tied
    as the output matrix; a mixture-of-experts tensor (`*_exps`) is read for the `expert_used_count` of
    `expert_count` experts the router picks. The KV cache read is left out (small at these contexts).
    """
    with GGUFFile.open(path) as gguf:
        arch = gguf.architecture
        n_expert = gguf.metadata.get(f"{arch}.expert_count")
        n_used = gguf.metadata.get(f"{arch}.expert_used_count")
        tied = "output.weight" not in gguf.tensors
        tensor_bytes = per_token = params = 0
        types: Counter[str] = Counter()
        for info in gguf.tensors.values():
            tensor_bytes += info.nbytes
            params += math.prod(info.shape)
            types[info.qtype.name] += 1
            if info.name == "token_embd.weight" and not tied:
                per_token += info.nbytes // info.shape[0]
            elif "_exps" in info.name and n_expert and n_used:
                per_token += info.nbytes * n_used // n_expert
            else:
                per_token += info.nbytes
        return {
            "file": path.name,
            "path": str(path),
            "file_bytes": gguf.file_size,
            "architecture": arch,
            "name": gguf.model_name,
            "tensors": len(gguf.tensors),
            "params": params,
            "tensor_types": dict(sorted(types.items())),
            "tensor_bytes": tensor_bytes,
            "weight_bytes_per_token": per_token,
            "tied_output": tied,
            "experts": None if not n_expert else {"count": n_expert, "used": n_used},
        }


def bandwidth_summary(per_token_bytes: int, tok_s: float, copy: dict[str, Any] | None) -> dict[str, Any]:
    """Achieved GB/s; with a measured copy bandwidth also its share and the floor (max tok/s)."""
    out: dict[str, Any] = {"achieved_gbps": round(per_token_bytes * tok_s / 1e9, 1)}
    if copy is not None:
        out["copy_gbps"] = copy["gbps"]
        out["pct_of_copy"] = round(100 * per_token_bytes * tok_s / (copy["gbps"] * 1e9), 1)
        out["floor_tok_s"] = round(copy["gbps"] * 1e9 / per_token_bytes, 1)
    return out
