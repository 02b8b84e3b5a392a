"""The code shown beside the download: how to run each exported file without Transfer Studio.

Plain text with no imports, so the app can show it without loading torch. :mod:`studio.deployment.package`
runs exactly these samples on the unpacked zip before it calls a file checked.
"""

from __future__ import annotations

__all__ = ["SAMPLES", "TASK_SAMPLES", "NEEDS", "samples_for", "usage_code"]

# How a picture is prepared, exactly as the app does it (timm's eval transform: torchvision's
# Resize of the shorter side, then CenterCrop), written with Pillow and NumPy only. A large
# JPEG is decoded at 1/2, 1/4 or 1/8 of its size, never below the resize (Pillow's draft; the
# app does the same: studio.data.loaders.prepared); other formats are decoded whole.
PREPARE = """import json
import numpy as np
from PIL import Image, ImageOps

pre = json.load(open("preprocess.json"))
labels = json.load(open("labels.json"))["labels"]
img = Image.open("photo.jpg")
img.draft(img.mode, (pre["resize"], pre["resize"]))  # a large JPEG: decoded smaller, faster
img = ImageOps.exif_transpose(img).convert("RGB")
# the shorter side to pre["resize"] pixels, then the centre pre["crop"] x pre["crop"]
w, h = img.size
short, long = pre["resize"], int(pre["resize"] * max(w, h) / min(w, h))
img = img.resize((short, long) if w <= h else (long, short), Image.Resampling[pre["interpolation"].upper()])
c = pre["crop"]
left, top = int(round((img.width - c) / 2)), int(round((img.height - c) / 2))
img = img.crop((left, top, left + c, top + c))
x = (np.asarray(img, np.float32) / 255 - np.float32(pre["mean"])) / np.float32(pre["std"])
x = x.transpose(2, 0, 1)[None].astype(np.float32)
"""

RUN = {
    "onnx": """import onnxruntime as ort

logits = ort.InferenceSession("model.onnx").run(None, {"image": x})[0][0]
""",
    "pt2": """import torch

model = torch.export.load("model.pt2").module()
logits = model(torch.from_numpy(x))[0].detach().numpy()
""",
    "torchscript": """import torch

model = torch.jit.load("model.torchscript.pt")
logits = model(torch.from_numpy(x))[0].detach().numpy()
""",
    "safetensors": """import timm, torch
from safetensors.torch import load_file

model = timm.create_model(json.load(open("config.json"))["backbone"], num_classes=len(labels))
model.load_state_dict(load_file("model.safetensors"))
logits = model.eval()(torch.from_numpy(x))[0].detach().numpy()
""",
}

ANSWER = "print(labels[int(logits.argmax())])\n"

# A multi-task model: the graphs give one output per task, named after it, in the order of
# labels.json's "tasks"; "logits" below is all of them side by side, as model.safetensors gives.
RUN_TASKS = {
    "onnx": """import onnxruntime as ort

session = ort.InferenceSession("model.onnx")
# one output per task, named after it: session.run(["colour"], ...) computes that one alone
outputs = session.run(None, {"image": x})
logits = np.concatenate([out[0] for out in outputs])
""",
    "pt2": """import torch

model = torch.export.load("model.pt2").module()
logits = np.concatenate([out[0].detach().numpy() for out in model(torch.from_numpy(x))])
""",
    "torchscript": """import torch

model = torch.jit.load("model.torchscript.pt")
logits = np.concatenate([out[0].detach().numpy() for out in model(torch.from_numpy(x))])
""",
    "safetensors": RUN["safetensors"],
}

ANSWER_TASKS = """info = json.load(open("labels.json"))
start, answers = 0, []
for task in info["tasks"]:
    block = logits[start : start + len(task["labels"])]
    start += len(task["labels"])
    if task["multilabel"]:  # the tags whose probability reaches the threshold
        on = [v for v, z in zip(task["labels"], block) if 1 / (1 + np.exp(-z)) >= info["threshold"]]
        answers.append(task["name"] + ": " + ";".join(on))
    else:
        answers.append(task["name"] + ": " + task["labels"][int(block.argmax())])
print(", ".join(answers))
"""

NEEDS = {
    "onnx": "pip install onnxruntime pillow numpy",
    "pt2": "pip install torch pillow numpy",
    "torchscript": "pip install torch pillow numpy",
    "safetensors": "pip install timm safetensors pillow numpy",
}

SAMPLES = {fmt: PREPARE + "\n" + run + ANSWER for fmt, run in RUN.items()}
# The same for a multi-task model: every task's answer, "material: brick, colour: red".
TASK_SAMPLES = {fmt: PREPARE + "\n" + run + ANSWER_TASKS for fmt, run in RUN_TASKS.items()}


def samples_for(multitask: bool) -> dict[str, str]:
    """The code samples for a run: :data:`TASK_SAMPLES` for a multi-task one."""
    return TASK_SAMPLES if multitask else SAMPLES


def usage_code(fmt: str, multitask: bool = False) -> str:
    """What to install and the code that runs one picture through the file of format ``fmt``."""
    return f"# {NEEDS[fmt]}\n{samples_for(multitask)[fmt]}"
