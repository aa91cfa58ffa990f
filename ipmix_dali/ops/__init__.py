"""The op table (names, parameter maps, method lists), level helpers and the mask hash."""
