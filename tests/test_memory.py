"""ipmix_dali.memory: the CPU stage's malloc settings keep freed blocks for reuse (no page
fault per page of every new temporary), and IPMIX_DALI_MALLOC=system keeps glibc's defaults."""
import json
import platform
import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc malloc only")

# 10 rounds of 4 temporaries of 8 MB alive together (the executor's pattern: several
# chunk-sized arrays at once), each written once, then freed: minor page faults counted.
PROBE = """
import json, resource, sys
import numpy as np
from ipmix_dali.memory import keep_freed_memory
applied = keep_freed_memory()
def round_():
    ts = [np.empty(1 << 21, np.float32) for _ in range(4)]  # 4 x 8 MB
    for t in ts:
        t.fill(1.0)
round_()  # the first round faults in either case
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(10):
    round_()
print(json.dumps({"applied": applied,
                  "faults": resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before}))
"""


def _probe(env_value):
    env = {"IPMIX_DALI_MALLOC": env_value} if env_value else {}
    import os

    out = subprocess.run([sys.executable, "-c", PROBE], env={**os.environ, **env},
                         capture_output=True, text=True, check=True, timeout=120)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_freed_blocks_are_reused_without_page_faults():
    kept, system = _probe(""), _probe("system")
    assert kept["applied"] is True and system["applied"] is False
    pages = 40 * (8 << 20) // 4096  # 81920 pages written in all
    # glibc's defaults: a free raises the mmap threshold to 8 MB and the trim threshold to
    # 16 MB, so the 32 MB freed at the heap top each round go back to the kernel and fault in
    # again. Kept: the same heap memory every round, no faults.
    assert kept["faults"] < pages // 100, kept
    assert system["faults"] > kept["faults"] + pages // 10, (system, kept)


def test_the_stage_applies_it_in_its_process():
    from ipmix_dali import memory
    from ipmix_dali.augmenter import Augmenter
    from ipmix_dali.config import make_config
    from ipmix_dali.executors import get_executor

    Augmenter(make_config("augmix", "cifar"), None, get_executor("numpy"))
    assert memory._applied is not None and memory._applied[1] is True


def test_an_unknown_value_warns_and_keeps_the_settings():
    """A typo (``IPMIX_DALI_MALLOC=sytem``) is neither the opt-out nor silent."""
    import os

    code = ("import logging; logging.basicConfig(level=logging.WARNING)\n"
            "from ipmix_dali.memory import keep_freed_memory\n"
            "print(keep_freed_memory())\n")
    out = subprocess.run([sys.executable, "-c", code],
                         env={**os.environ, "IPMIX_DALI_MALLOC": "sytem"},
                         capture_output=True, text=True, check=True, timeout=120)
    assert out.stdout.strip() == "True"
    assert "IPMIX_DALI_MALLOC='sytem' is not 'system'" in out.stderr
