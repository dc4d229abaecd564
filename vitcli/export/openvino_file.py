"""Writing an OpenVINO IR (`.xml` + `.bin`) from the checked ONNX file, for `vit export --format openvino`.

`openvino.convert_model` reads the ONNX file `vit export` has just written and checked; the model's
metadata goes into the IR's runtime info (`vitcli`, read back by vitcli.export.openvino_model). Weights
are stored in fp32 unless `--half` asks for fp16 (OpenVINO's own default is fp16: not taken silently).
Both files are written to a staging folder beside the output and moved into place, the .bin first.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from vitcli.errors import ModelError


def to_openvino(onnx_file: Path, output: Path, meta: dict, *, half: bool = False) -> Path:
    try:
        import openvino as ov
    except ImportError:
        raise ModelError("--format openvino needs the openvino package", "pip install 'vitcli[openvino]'") from None
    model = ov.convert_model(str(onnx_file))
    model.set_rt_info(json.dumps(meta), ["vitcli"])
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".vit-openvino-", dir=output.parent) as staging:
        xml = Path(staging) / output.name
        ov.save_model(model, str(xml), compress_to_fp16=half)
        os.replace(xml.with_suffix(".bin"), output.with_suffix(".bin"))
        os.replace(xml, output)
    return output
