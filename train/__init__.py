"""ResNet-50 ImageNet trainer on the DALI pipeline (`ipmix-dali train`). Not built yet: see the trainer issue."""
