"""Entry point of a CPU stage worker process: ``python -m ipmix_dali.executors._pool_worker FD
CHUNK`` (its own module so that running it does not re-execute :mod:`.pool`, which the package
imports)."""
import sys

from ipmix_dali.executors.pool import _worker

if __name__ == "__main__":
    _worker(int(sys.argv[1]), int(sys.argv[2]))
