"""DeviceMemory accounting, budget and VramOOM, 256-byte weight alignment, residency checks
(M0-W-1011, M0-W-1012, M0-W-1021, M0-W-1220)."""

from __future__ import annotations

import threading

import pytest
import torch

from reference_worker.device_memory import WEIGHT_ALIGNMENT, DeviceMemory, MemoryCategory, VramOOM
from reference_worker.residency import ResidencyMonitor, all_resident, tensor_is_resident


def test_accounting_by_category() -> None:
    memory = DeviceMemory("cpu")
    kv = memory.allocate(MemoryCategory.KV_CACHE, shape=(2, 8), dtype=torch.float16)
    scratch = memory.allocate("scratch", 100)
    assert kv.shape == (2, 8) and kv.dtype == torch.float16 and scratch.numel() == 100
    assert memory.by_category == {"weights": 0, "kv_cache": 32, "scratch": 100, "weight_cache": 0}
    assert memory.used_bytes == 132
    memory.release("kv_cache", kv)
    memory.release("kv_cache", kv)  # twice is a no-op
    assert memory.by_category["kv_cache"] == 0 and memory.used_bytes == 100


def test_weights_are_256_byte_aligned() -> None:
    memory = DeviceMemory("cpu")
    tensors = [memory.allocate("weights", n) for n in (1, 17, 255, 256, 1000, 4097)]
    assert all(t.data_ptr() % WEIGHT_ALIGNMENT == 0 for t in tensors)
    assert [t.numel() for t in tensors] == [1, 17, 255, 256, 1000, 4097]
    tensors[2].fill_(7)  # writable, independent storage
    assert tensors[1].sum() != 7 * 17 or tensors[1].data_ptr() != tensors[2].data_ptr()


def test_budget_refusal_raises_vram_oom_and_accounts_nothing() -> None:
    memory = DeviceMemory("cpu", budget_bytes=1000)
    memory.allocate("kv_cache", 600)
    with pytest.raises(VramOOM) as info:
        memory.allocate("kv_cache", 600)
    assert info.value.category == "kv_cache" and info.value.budget == 1000
    assert "budget" in str(info.value)
    assert memory.used_bytes == 600
    memory.allocate("scratch", 400)  # what is left still works


def test_kv_cache_limit() -> None:
    memory = DeviceMemory("cpu", kv_cache_limit_bytes=512)
    memory.allocate("scratch", 4096)
    memory.allocate("kv_cache", 512)
    with pytest.raises(VramOOM, match="KV cache limit"):
        memory.allocate("kv_cache", 1)


def test_device_out_of_memory_becomes_vram_oom(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    memory = DeviceMemory("cpu")
    monkeypatch.setattr(torch, "empty", refuse)
    with pytest.raises(VramOOM, match="out of memory"):
        memory.allocate("kv_cache", 64)
    assert memory.used_bytes == 0


def test_allocate_needs_a_size() -> None:
    with pytest.raises(ValueError):
        DeviceMemory("cpu").allocate("scratch", 3, dtype=torch.float32)


def test_residency_on_cpu() -> None:
    memory = DeviceMemory("cpu")
    memory.allocate("weights", 1024)
    assert memory.residency_check()
    assert tensor_is_resident(torch.zeros(4), torch.device("cpu"))
    assert not tensor_is_resident(torch.zeros(4), torch.device("cuda", 0))
    assert not all_resident([torch.zeros(1), torch.zeros(1, device="meta")], torch.device("cpu"))


def test_residency_monitor_reports_failure_once() -> None:
    results = iter([True, False])
    failed = threading.Event()
    calls = []
    monitor = ResidencyMonitor(lambda: next(results), 0.01, lambda: (calls.append(1), failed.set()))
    monitor.start()
    assert failed.wait(2)
    monitor.stop()
    assert calls == [1]


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_weights_are_device_memory() -> None:
    memory = DeviceMemory("cuda:0")
    weight = memory.allocate("weights", 4096)
    assert weight.is_cuda and weight.data_ptr() % WEIGHT_ALIGNMENT == 0
    assert memory.residency_check()
    assert not tensor_is_resident(torch.zeros(4, pin_memory=True), torch.device("cuda", 0))


def test_the_allocator_view_is_empty_on_cpu() -> None:
    assert DeviceMemory("cpu").allocator_bytes() == {}


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_the_allocator_gives_back_what_the_accounting_releases() -> None:
    memory = DeviceMemory("cuda")
    before = memory.allocator_bytes()["allocated"]
    kv = memory.allocate(MemoryCategory.KV_CACHE, 1 << 20)
    assert memory.allocator_bytes()["allocated"] >= before + (1 << 20)
    memory.release("kv_cache", kv)
    del kv
    assert memory.allocator_bytes()["allocated"] == before
