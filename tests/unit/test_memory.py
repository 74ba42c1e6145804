"""stran.memory: with ``keep_freed_memory`` a large tensor comes from the heap, not from a fresh mmap (glibc)."""

from __future__ import annotations

import subprocess
import sys

import pytest

PROBE = r"""
import ctypes, json, sys
import torch
from stran.memory import keep_freed_memory

class MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks",
                 "keepcost")]

libc = ctypes.CDLL("libc.so.6")
libc.mallinfo2.restype = MallInfo2
size = 64 * 2**20
t = torch.empty(size // 4)
before = libc.mallinfo2().hblkhd  # bytes in mmapped blocks: the tensor
del t
ok = keep_freed_memory()
t = torch.empty(size // 4)
after = libc.mallinfo2()
print(json.dumps({"ok": ok, "mmapped_before": before, "mmapped_after": after.hblkhd, "heap": after.arena}))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's allocator")
def test_a_large_tensor_comes_from_the_heap_once_kept() -> None:
    import json

    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, check=True, timeout=120)
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["ok"] is True
    assert got["mmapped_before"] >= 64 * 2**20  # glibc's default: a block this size is its own mmap
    assert got["mmapped_after"] < 64 * 2**20 <= got["heap"]  # now: the heap holds it
