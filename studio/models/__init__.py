"""The networks: the backbone catalog and its pretrained weights, which layers are frozen, and
the kinds of model a run can hold (timm, and later pruned, quantized, distilled) with how each is
saved and loaded.

``backbones`` (catalog, weights, preprocessing), ``freeze`` (layer groups, freeze specs),
``kinds`` (``save_model`` / ``load_run`` by kind: ``model.json`` says which).

May import: the foundations and :mod:`studio.data`.
"""
