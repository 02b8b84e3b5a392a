"""Export tab: one zip with the model in every format, checked, plus how to use it."""

from __future__ import annotations

import zipfile

import gradio as gr

from .common import Context, friendly, load_engine, run_picker

HELP = """### 7. Take your model with you
**Build the download** makes a zip with your model as `model.safetensors` (for Python), ONNX (for
phones, web pages, C#, Java), `model.pt2` (PyTorch's `torch.export`) and TorchScript (older C++
apps), plus the class names, the picture preparation and a model card describing it. Each exported
file is checked to give the same answers as the original."""

USAGE = """```python
# pip install onnxruntime pillow numpy
import json, numpy as np, onnxruntime as ort
from PIL import Image
pre = json.load(open("preprocess.json")); labels = json.load(open("labels.json"))["labels"]
img = Image.open("photo.jpg").convert("RGB")
s = pre["resize"] / min(img.size)
img = img.resize((round(img.width * s), round(img.height * s)), Image.BICUBIC)
left, top = (img.width - pre["crop"]) // 2, (img.height - pre["crop"]) // 2
img = img.crop((left, top, left + pre["crop"], top + pre["crop"]))
x = (np.asarray(img, np.float32) / 255 - pre["mean"]) / pre["std"]
x = x.transpose(2, 0, 1)[None].astype(np.float32)
logits = ort.InferenceSession("model.onnx").run(None, {"image": x})[0][0]
print(labels[int(logits.argmax())])
```"""

FILES = [
    "model.safetensors",
    "model.onnx",
    "model.pt2",
    "model.torchscript.pt",
    "labels.json",
    "preprocess.json",
    "MODEL_CARD.md",
    "metrics.json",
    "config.json",
    "exports.json",
]


def build_export_tab(ctx: Context, ws_state: gr.State) -> dict:
    gr.Markdown(HELP)
    run, refresh = run_picker(ctx, ws_state, "Which trained model to export.", "export-run")
    build = gr.Button("Build the download", variant="primary", elem_id="build-export")
    checks = gr.Markdown(elem_id="export-checks")
    download = gr.File(label="Your model (zip)", elem_id="export-zip")
    gr.Markdown("#### How to use the file\n" + USAGE)

    @friendly
    def make(ws_id, name, progress=gr.Progress()):
        load_engine()
        from ..export import FORMATS, export_run

        ws = ctx.workspace(ws_id)
        folder = ws.resolve_run(name or "")
        lines = []
        steps = len(FORMATS) + 1
        for i, fmt in enumerate(FORMATS):
            progress(i / steps, desc=f"exporting {fmt} and checking it")
            result = export_run(folder, fmt)
            lines.append(
                f"- **{fmt}**: same top answer as the original on "
                f"{result.agreement:.0%} of {result.images} pictures "
                f"(largest difference {result.max_abs_diff:.1e})"
            )
        progress(len(FORMATS) / steps, desc="packing the zip")
        target = folder / f"{folder.name}.zip"
        with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as zf:
            for file in FILES:
                if (folder / file).exists():
                    zf.write(folder / file, f"{folder.name}/{file}")
        return "Checked:\n" + "\n".join(lines), str(target)

    build.click(make, [ws_state, run], [checks, download], api_name="export")

    return {"refresh": refresh, "views": [run]}
