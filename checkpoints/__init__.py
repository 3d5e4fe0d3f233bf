"""Hidden checkpoint verifiers for the Day-7 notebooks.

One module per notebook (``colab_a``, ``colab_b``, ``colab_c``). Hidden cells in the
instructor source notebooks are thin calls into these modules; they exist only in the
source and at grading time, never in the student release.
"""

from checkpoints.common import CheckpointFailed, passed

__all__ = ["CheckpointFailed", "passed"]
