"""The search room: architecture search over block specs.

- :mod:`~reparam_zoo.search.space`: search spaces — YAML block (and net) templates with
  ``{choice: [...]}`` points; :class:`SearchSpace` enumerates and samples valid candidates, and
  :func:`candidate_cost` measures one.
- :mod:`~reparam_zoo.search.study`: the Optuna study — choice points as distributions, one trial
  trains one candidate with the bench trainer, many processes share one storage, never training a
  candidate twice.
- :mod:`~reparam_zoo.search.supernet`: block-level supernets — every optional branch gated in one
  block, trained, cut down to the branches the gates keep.
- :mod:`~reparam_zoo.search.run`: the two searches of ``reparam-zoo search`` from data to result
  files (held-out split, re-evaluation against the plain control); :mod:`~reparam_zoo.search.leaderboard`:
  the leaderboard files and the Pareto plot they write.

Importing this package loads only the spaces; the study needs Optuna (``reparam_zoo[search]``).
"""

from reparam_zoo.search.space import Geometry, SearchSpace, candidate_cost, pareto_front, spec_hash

__all__ = ["Geometry", "SearchSpace", "candidate_cost", "pareto_front", "spec_hash"]
