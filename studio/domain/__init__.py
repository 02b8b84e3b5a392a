"""Domain shift: how different new pictures are from the ones a model learnt on, and where.

``pictures`` (a folder of pictures, labelled by sub-folder or not, each checked), ``shift``
(features from a run's model or a catalog backbone; the maximum mean discrepancy with a
permutation test, a domain classifier's proxy A-distance, the most typical and most unlike
pictures, a 2-D map, and a verdict in one sentence), ``losses`` and ``adapt`` (training with
unlabelled new pictures: Deep CORAL, DAN, DANN, importance reweighting), ``example`` (a seeded
shifted copy of a folder, for tests, benchmarks and a first look).

May import: the foundations, :mod:`studio.data`, :mod:`studio.models`, :mod:`studio.inspection`,
:mod:`studio.training`.
"""
