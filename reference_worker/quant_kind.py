"""`/health.quant_kind`: what the weights are stored as (M0-W-1201, M0-W-1823).

Read from `general.file_type` (llama.cpp's `llama_ftype`); when the key is absent, the type that holds
the most bytes among the 2-D weight matrices names the file.
"""

from __future__ import annotations

from collections import Counter

from kernels.formats import GGMLType

from .gguf import GGUFFile

# llama_ftype values (llama.h). MXFP4_MOE keeps non-expert tensors in other types; M0-W-1823 calls it "MXFP4".
FILE_TYPES: dict[int, str] = {
    0: "F32",
    1: "F16",
    2: "Q4_0",
    3: "Q4_1",
    7: "Q8_0",
    8: "Q5_0",
    9: "Q5_1",
    10: "Q2_K",
    11: "Q3_K_S",
    12: "Q3_K_M",
    13: "Q3_K_L",
    14: "Q4_K_S",
    15: "Q4_K_M",
    16: "Q5_K_S",
    17: "Q5_K_M",
    18: "Q6_K",
    19: "IQ2_XXS",
    20: "IQ2_XS",
    21: "Q2_K_S",
    22: "IQ3_XS",
    23: "IQ3_XXS",
    24: "IQ1_S",
    25: "IQ4_NL",
    26: "IQ3_S",
    27: "IQ3_M",
    28: "IQ2_S",
    29: "IQ2_M",
    30: "IQ4_XS",
    31: "IQ1_M",
    32: "BF16",
    36: "TQ1_0",
    37: "TQ2_0",
    38: "MXFP4",
}


def quant_kind(gguf: GGUFFile) -> str:
    file_type = gguf.metadata.get("general.file_type")
    if isinstance(file_type, int) and file_type in FILE_TYPES:
        return FILE_TYPES[file_type]
    return dominant_matrix_type(gguf)


def dominant_matrix_type(gguf: GGUFFile) -> str:
    bytes_by_type: Counter[GGMLType] = Counter()
    for info in gguf.tensors.values():
        if len(info.shape) >= 2:
            bytes_by_type[info.qtype] += info.nbytes
    if not bytes_by_type:
        bytes_by_type.update({t.qtype: t.nbytes for t in gguf.tensors.values()})
    if not bytes_by_type:
        return "unknown"
    return bytes_by_type.most_common(1)[0][0].name
