"""A model as a pt2 file (a `torch.export` ExportedProgram, written by `vit export --format pt2`): run by
torch without timm's model code.

The file carries what predicting needs as the extra file `vitcli.json` (architecture, preprocessing, label
names, origin), the same JSON an ONNX file keeps in its metadata. `load` gives a torch module the resolver
hands out like any model: `.eval()` and `.to()` are no-ops (an exported program is already in inference
form and fixed to the CPU it was exported on), tensors in, logits out.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from vitcli.errors import ModelError
from vitcli.output import display

META_FILE = "vitcli.json"


def is_pt2(spec: str) -> bool:
    return str(spec).lower().endswith(".pt2") and Path(spec).expanduser().is_file()


def load(path: str | os.PathLike):
    """(module, metadata) of a pt2 file written by `vit export`."""
    import torch

    path = Path(path).expanduser()
    extra = {META_FILE: ""}
    try:
        program = torch.export.load(str(path), extra_files=extra)
    except Exception as e:  # noqa: BLE001 - zip, pickle and schema errors alike: one line naming the file
        raise ModelError(
            f"{display(path)} is not a readable pt2 model "
            f"({str(e).strip().splitlines()[0][:160] if str(e).strip() else type(e).__name__})",
            "export it again with `vit export --format pt2` (with this torch version)",
        ) from None
    if not extra[META_FILE]:
        raise ModelError(
            f"{display(path)} has no vitcli metadata (preprocessing and label names)",
            "export the model with `vit export --format pt2`, which stores them in the file",
        )
    meta = json.loads(extra[META_FILE])
    graph = program.module()

    class ExportedModule(torch.nn.Module):
        """The program's module, held outside the module tree: torch.export's modules refuse .eval()."""

        def __init__(self):
            super().__init__()
            self.__dict__["graph"] = graph
            self.num_classes = len(meta["label_names"])
            self.pretrained_cfg = {"architecture": meta["architecture"], **meta["data_config"]}
            self.exported = path

        def forward(self, x):
            return self.__dict__["graph"](x)

    return ExportedModule(), meta
