"""Domain shift: how different new pictures are from the ones a model learnt on, and where.

``pictures`` (a folder of pictures, labelled by sub-folder or not, each checked), ``shift``
(features from a run's model or a catalog backbone; the maximum mean discrepancy with a
permutation test, a domain classifier's proxy A-distance, the most typical and most unlike
pictures, a 2-D map, and a verdict in one sentence). Adaptation comes next (issue 11).

May import: the foundations, :mod:`studio.data`, :mod:`studio.models`, :mod:`studio.inspection`,
:mod:`studio.training`.
"""
