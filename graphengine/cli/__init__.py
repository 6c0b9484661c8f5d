"""The ``graphengine`` command line: one module per command, wired in main.py."""
