"""``python -m cnnlab_compare``: the same as the ``cnnlab-compare`` command."""

from cnnlab_compare.cli import run

run()
