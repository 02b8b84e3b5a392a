"""Making a model: the training loop and the fine-tuning recipe on top of it.

``config`` (TrainConfig), ``loop`` (the public loop: set-up, feeders, optimizer and scheduler,
one epoch with hooks, validation; what distillation and adaptation build on), ``train`` (the
fine-tuning recipe, read top to bottom), ``cache`` (frozen-prefix features), ``head_fit`` (the
exact head on frozen features), ``presets``, ``lr_finder``.

May import: the foundations, :mod:`studio.data`, :mod:`studio.models`, :mod:`studio.inspection`.
"""
