"""Worker capabilities the M0 CLI does not fix: what a worker declares with `--worker-flag NAME=TEMPLATE`.

Some scenarios need a switch only some workers have: a device-memory budget (to make a CPU run, or a large
GPU, run out of memory on purpose), a residency fault hook, a swapped KV cache or attention kernel, or the
optional flags of M0-W-1101 (a MAY requirement). A scenario whose capability is not declared is not
applicable, and the reason names the option to pass. The reference worker's flags are built in.

    memory_budget    placeholders {mb} (whole MiB) and {bytes}   reference: --vram-budget-mb {mb}
    residency_fault  no placeholder: the worker fails its residency check soon after it is ready
    optional_flags   placeholders {max_tokens_in} {max_tokens_out} {timeout_s} {kv_cache_mb}
    cuda_graphs      no placeholder: the decode step replayed as a CUDA graph  reference: --cuda-graphs
    eager_decode     no placeholder: the same step launched kernel by kernel   reference: --no-cuda-graphs
    prefix_cache     no placeholder: the KV of a shared prompt prefix reused   reference: --prefix-cache
                     (an empty template: the worker always reuses it)
"""

from __future__ import annotations

import shlex

import pytest

from steps.targets import cuda_visible
from steps.verdicts import not_applicable

CAPABILITIES = {
    "memory_budget": "a device-memory budget ({mb} MiB or {bytes} bytes)",
    "residency_fault": "a failed residency check injected after startup",
    "kv_cache_paged": "a paged KV cache in place of the contiguous one (M1-PAGED-KV)",
    "attention_sdpa": "a fused (SDPA/FlashAttention) attention kernel in place of the plain one (M1-FLASH-ATTN)",
    "optional_flags": "the optional flags of M0-W-1101, a MAY requirement ({max_tokens_in} {max_tokens_out} "
    "{timeout_s} {kv_cache_mb})",
    "cuda_graphs": "the decode step captured and replayed as a CUDA graph",
    "eager_decode": "the same decode step launched kernel by kernel, without a CUDA graph",
    "prefix_cache": "a prefix cache: the KV of a shared prompt prefix reused by the next prompt",
}
REFERENCE_FLAGS = {
    "memory_budget": "--vram-budget-mb {mb}",
    "kv_cache_paged": "--kv-cache paged",
    "attention_sdpa": "--attention sdpa",
    "residency_fault": "--inject-residency-fault-after-sec 1 --residency-check-interval-sec 0.5",
    "optional_flags": "--max-tokens-in {max_tokens_in} --max-tokens-out {max_tokens_out} "
    "--inference-timeout-sec {timeout_s} --kv-cache-size-mb {kv_cache_mb}",
    "cuda_graphs": "--cuda-graphs",
    "eager_decode": "--no-cuda-graphs",
    "prefix_cache": "--prefix-cache",
}


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.getgroup("worker-orcd").addoption(
        "--worker-flag",
        action="append",
        default=[],
        metavar="NAME=TEMPLATE",
        help="worker-specific flags for a capability the M0 CLI lacks (repeatable): "
        + "; ".join(f"{name}: {text}" for name, text in CAPABILITIES.items())
        + ". The reference worker's are built in.",
    )


def capability_flags(config: pytest.Config) -> dict[str, str]:
    """The declared capabilities: the reference worker's when it is the one spawned, plus `--worker-flag`."""
    declared = dict(REFERENCE_FLAGS) if config.getoption("worker_cmd") is None else {}
    for entry in config.getoption("worker_flag"):
        name, sep, template = entry.partition("=")
        if not sep or name not in CAPABILITIES:
            raise pytest.UsageError(
                f"--worker-flag {entry!r}: expected NAME=TEMPLATE with NAME one of {', '.join(CAPABILITIES)}"
            )
        declared[name] = template
    return declared


def declares(config: pytest.Config, name: str) -> bool:
    return name in capability_flags(config)


def capability_args(config: pytest.Config, name: str, **values: object) -> tuple[str, ...]:
    """The worker's arguments for a capability, placeholders filled; not applicable when undeclared."""
    template = capability_flags(config).get(name)
    if template is None:
        not_applicable(
            f"needs {CAPABILITIES[name]}, which the worker does not declare "
            f'(pass --worker-flag {name}="<the worker\'s flag>")'
        )
    text = template
    for key, value in values.items():
        text = text.replace("{" + key + "}", str(value))
    return tuple(shlex.split(text))


def device_memory_judged(config: pytest.Config) -> str | None:
    """None when device residency and device bytes can be judged here, else why not: no CUDA GPU is
    visible and the worker declares no memory budget (M0-SYS-2.2.1, M0-W-1011 on a machine without a
    device: host tensors are not "resident", and 0 device bytes is the truth)."""
    if cuda_visible() or declares(config, "memory_budget"):
        return None
    return (
        "no CUDA GPU is visible and the worker declares no device-memory budget (--worker-flag "
        "memory_budget=...), so device residency and device bytes cannot be judged here"
    )
