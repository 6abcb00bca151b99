"""Pure wire-format translators: no I/O, nothing else of ours imported but each other."""
