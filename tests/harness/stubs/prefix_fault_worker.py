"""The reference worker with a faulty prefix cache, for the prefix-cache scenario's self-test
(tests/harness/test_prefix_cache_scenario.py): a real worker that reuses a prefix and breaks one rule of it.

    python tests/harness/stubs/prefix_fault_worker.py --fault ignores-tokens <the reference worker's arguments>

    ignores-tokens   reuses the kept positions whatever tokens they hold (a cache keyed by length only)
"""

from __future__ import annotations

import sys

from reference_worker import prefix_cache
from reference_worker.worker import main


def _reuse_by_length(kept, prompt) -> int:
    return min(len(kept), len(prompt) - 1)


FAULTS = {"ignores-tokens": _reuse_by_length}

if __name__ == "__main__":
    args = sys.argv[1:]
    if args[:1] != ["--fault"] or len(args) < 2 or args[1] not in FAULTS:
        sys.exit(f"usage: prefix_fault_worker.py --fault {{{','.join(FAULTS)}}} <worker arguments>")
    prefix_cache.shared_prefix = FAULTS[args[1]]  # looked up by PrefixCache.take at each request
    sys.exit(main(args[2:]))
