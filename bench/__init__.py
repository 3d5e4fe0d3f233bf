"""Benchmarks of the Day-7 course (issue 7): ``python -m bench [--quick]``.

1. notebooks: each notebook headless (through ``autograde.runner.execute_notebook``) vs the
   same code cells as a bare Python script; the ratio per notebook;
2. grading: N copies of a perfect submission graded by ``autograde``'s ``grade()`` with 1 and
   with all workers, and by nbgrader's own ``nbgrader autograde`` CLI;
3. scaling: grading wall time for 10, 20 and 40 submissions;
4. the lesson figures, read from the freshly executed notebooks.

One table is printed and ``bench/results/<date>.json`` written. See ``bench/cli.py`` METHOD
for how each figure is computed.
"""
