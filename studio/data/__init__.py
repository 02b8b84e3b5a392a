"""Pictures in: folders, zips and CSVs read and checked into a :class:`~studio.data.dataset.Dataset`
with its report, the picture loaders and augmentation the training reads them through, and the
bundled example.

``dataset`` (load and check, split, duplicates), ``images`` (safe decoding), ``safezip`` (zips
that cannot escape their folder), ``loaders`` (tensors, augmentation), ``example``.

May import: the top-level foundations (``errors``, ``paths``, ``rng``, ``runs``) only.
"""
