"""A stand-in for SGLang's CPU kernel package (``sgl_kernel``), which PyPI carries only as a CUDA
build. It is first on the real-SGLang server's ``PYTHONPATH`` (tests/realsglang/server.py).

Only the kernel SGLang's CPU request path calls is implemented, in plain torch, with the same
arguments: writing each request's new KV slots into its row of the request-to-token table. Any
other name resolves to a function that raises, so a code path this stand-in does not cover fails
loudly instead of computing something else.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, NoReturn

if TYPE_CHECKING:  # torch is SGLang's environment's, not the test suite's
    import torch


def assign_req_to_token_pool_cpu(
    req_pool_indices: torch.Tensor,
    req_to_token: torch.Tensor,
    start_offset: torch.Tensor,
    end_offset: torch.Tensor,
    out_cache_loc: torch.Tensor,
    pool_len: int,
) -> None:
    """``req_to_token[req, start:end] = `` the request's slice of ``out_cache_loc`` (the new
    slots of every request of the batch, one after another)."""
    del pool_len  # the table's row length: the row slice below already has it
    at = 0
    for req, start, end in zip(
        req_pool_indices.tolist(), start_offset.tolist(), end_offset.tolist(), strict=True
    ):
        n = end - start
        req_to_token[req, start:end] = out_cache_loc[at : at + n].to(req_to_token.dtype)
        at += n


def __getattr__(name: str) -> Any:
    if name.startswith("__"):
        raise AttributeError(name)

    def missing(*_: object, **__: object) -> NoReturn:
        raise NotImplementedError(f"sgl_kernel.{name}: not in the test stand-in")

    return missing
