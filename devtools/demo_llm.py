"""`make demo-llm`: the LLM workflow against the project's own OpenAI-compatible server.

Starts the server where configs/providers.yaml expects provider `local` (127.0.0.1:8900), runs
configs/workflows/organisations_llm.yaml twice — the second run is answered from the result
cache and sends no request — and prints what the server saw each time.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from devtools.fake_openai import FakeOpenAI

SPEC = "configs/workflows/organisations_llm.yaml"


def main() -> int:
    augment = str(Path(sys.executable).with_name("augment"))
    with FakeOpenAI(port=8900, rpm=1200, latency_ms=(50, 300)) as server:
        for attempt in ("first run", "second run (unchanged: served from the cache)"):
            server.reset()
            print(f"\n=== {attempt}: augment run {SPEC}", flush=True)
            code = subprocess.call([augment, "run", SPEC])
            stats = server.stats()
            print(f"--- the provider received {stats['requests']} request(s): {stats['by_status']}", flush=True)
            if code:
                return code
    return 0


if __name__ == "__main__":
    sys.exit(main())
