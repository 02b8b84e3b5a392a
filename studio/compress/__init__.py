"""Making a trained model smaller and faster, and measuring what each option costs.

``measure`` (parameters, MACs, file size, latency at batch 1 and 32 in a named runtime with
fixed threads), ``quantize`` (int8 static or dynamic, or fp16, with ONNX Runtime; bf16 in PyTorch), ``prune``
(structured, Torch-Pruning), ``sparsify`` (unstructured), ``distill`` (a student taught by the
run), ``variant`` (a variant's folder and finishing), ``report`` (``compression.json`` and the comparison of a run
with its variants). Every variant is a run folder of its own whose ``model.json`` names its kind
and parent (:mod:`studio.models.kinds`), so Evaluate, Predict and Export work on it.

May import: the foundations, :mod:`studio.data`, :mod:`studio.models`, :mod:`studio.inspection`,
:mod:`studio.training`, :mod:`studio.deployment` (a variant is measured as it is deployed).
"""
