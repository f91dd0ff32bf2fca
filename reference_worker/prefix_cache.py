"""The prefix cache (M1-PREFIX-CACHE): the KV of the last prompt kept after its request, for the next prompt
that starts with the same tokens (a system prompt, a conversation's earlier turns).

At batch 1 one entry serves the common case: the prompts of a conversation or of one system prompt come
one after another. After a request whose prefill completed, its cache is kept holding the prompt's positions
only: the positions the decode steps wrote are dropped, because a later prefill of the same tokens would
compute them with the prefill's products (on the GPU: GEMMs, not the decode's GEMVs), and the reuse must give
what a prefill gives. The next request takes the entry; it reuses the positions its prompt shares with the
kept one, at most all but the prompt's last token (that one is always run, for the logits of the first
token). The entry's memory stays accounted as KV cache (`DeviceMemory`), so `/health` shows it; when a new
request's cache does not fit beside it, the entry is dropped first (M0-W-1021: VRAM_OOM only when the
request cannot fit on its own).

Off by default (`--prefix-cache`): M0 frees a request's KV cache when the request ends (M0-W-1420).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from reference_worker.models.kv_cache import KVCache


@dataclass(frozen=True)
class PrefixHit:
    """What a request takes from the cache: the kept cache, of which the first `shared` positions are the
    request's prompt's (`cache.length == shared`), or no cache and nothing shared."""

    cache: KVCache | None
    shared: int


MISS = PrefixHit(None, 0)


def shared_prefix(kept: Sequence[int], prompt: Sequence[int]) -> int:
    """How many positions of `kept` a prefill of `prompt` may reuse: their common prefix, but never the
    prompt's last token, whose forward gives the first token's logits."""
    limit = min(len(kept), len(prompt) - 1)
    n = 0
    while n < limit and kept[n] == prompt[n]:
        n += 1
    return n


class PrefixCache:
    """One kept prompt and its cache; `take` hands it to the next request, `keep` takes a finished one's."""

    def __init__(self) -> None:
        self._ids: tuple[int, ...] = ()
        self._cache: KVCache | None = None
        self.hits = 0  # requests that reused at least one position
        self.reused_positions = 0  # prompt positions not prefilled again, over all requests

    @property
    def kept_positions(self) -> int:
        return 0 if self._cache is None else self._cache.length

    def take(self, prompt_ids: Sequence[int]) -> PrefixHit:
        """Removes the kept cache; returns it cut to the positions `prompt_ids` shares with it, or frees it
        and returns `MISS` when the prompt shares none. The caller owns (frees or keeps) what it gets."""
        cache, ids = self._cache, self._ids
        self._cache, self._ids = None, ()
        if cache is None:
            return MISS
        shared = shared_prefix(ids, prompt_ids)
        if shared == 0:
            cache.free()
            return MISS
        cache.truncate(shared)
        self.hits += 1
        self.reused_positions += shared
        return PrefixHit(cache, shared)

    def keep(self, prompt_ids: Sequence[int], cache: KVCache) -> None:
        """Keeps `cache`, whose first `len(prompt_ids)` positions are the prompt's (its prefill completed),
        in place of the entry before; the positions past the prompt are dropped (module docstring)."""
        self.clear()
        cache.truncate(len(prompt_ids))
        self._ids, self._cache = tuple(prompt_ids), cache

    def clear(self) -> None:
        """Frees the kept cache, if any (before an allocation that does not fit beside it)."""
        if self._cache is not None:
            self._cache.free()
        self._cache, self._ids = None, ()
