"""Inside the transfer: what carries over from a pretrained backbone to a person's pictures.

``logme`` (LogME, the maximised evidence of a linear model on frozen features), ``rank`` (every
backbone with weights here scored on a sample of the training pictures: LogME, a k-fold linear
probe, time and size; the best trade-off picked), ``layers`` (linear CKA: what fine-tuning
changed in each layer group and what to freeze next time; the stages of two models compared).

May import: the foundations, :mod:`studio.data`, :mod:`studio.models`, :mod:`studio.inspection`,
:mod:`studio.training`, :mod:`studio.domain` (its feature extractor and picture sets).
"""
