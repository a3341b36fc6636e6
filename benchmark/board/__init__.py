"""The leaderboard: tables and plots rebuilt from the run records alone.

Layers, each importing only the ones above it: :mod:`.tables` (rows, ranks, the summary),
:mod:`.plots` (figures of the same rows and runs), :mod:`.leaderboard` (reads the records and the
reference tables, writes every file). Nothing here imports the methods, the data or the sweep:
what a table shows is in the records and in ``results/reference/``.
"""
