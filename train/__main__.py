"""``python -m ipmix_dali.train`` (and under torchrun): the same flags as ``ipmix-dali train``."""
import sys

from ipmix_dali.train.loop import main

sys.exit(main())
