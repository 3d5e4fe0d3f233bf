"""Checkpoint declarations for the Day-7 notebooks, judged outside the student's kernel.

One module per notebook (``colab_a``, ``colab_b``, ``colab_c``), each with a ``CHECKPOINTS``
list built on the one interface in ``checkpoints.interface``. Hidden cells in the instructor
source notebooks only name their module; the grader (``autograde.collect``) collects data
from the running notebook and judges it in its own process. ``probes/`` holds the standalone
scripts a checkpoint runs over a student's files in a fresh sandbox.
"""

from checkpoints.interface import Checkpoint, Prediction, Unavailable, Verdict

__all__ = ["Checkpoint", "Prediction", "Unavailable", "Verdict"]
