"""Tools around the library: ``show`` (a grid of augmented views), ``demo`` (the whole job on
built-in data) and ``samples`` (natural test images and JPEG trees without a download)."""
