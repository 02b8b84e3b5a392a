"""Taking a model away: predictions, checked exports and the download zip.

``predict`` (a run on new pictures), ``export`` (ONNX, torch.export, TorchScript, each checked
against PyTorch), ``package`` (the zip, checked as received), ``samples`` (the usage code shown
and run on the zip).

May import: the foundations, :mod:`studio.data`, :mod:`studio.models`, :mod:`studio.inspection`.
"""
