"""``python -m ipmix_dali.eval``: the same flags as ``ipmix-dali eval``."""
import sys

from ipmix_dali.cli import main

sys.exit(main(["eval", *sys.argv[1:]]))
