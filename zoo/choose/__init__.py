"""The family decision: ``zoo choose DATA --budget T`` trains every candidate family on the
user's data under one budget, spends the time on the contenders (successive halving), trains
the finalists with several seeds and recommends one, saying how sure it is.

- ``presets``: each family's sizes and learning rates, and the rule that picks one for a
  budget and device;
- ``plan``: the budget (wall time or FLOPs) and the rounds of successive halving;
- ``scores``: quality with common random numbers, bootstrap replicates over samples and
  seeds, the probability each finalist is best;
- ``decision``: the recommendation per criterion, the flags, the Pareto front;
- ``document``: the decision report (Markdown and HTML);
- ``tournament``: runs it all in an output directory, resumable.
"""
