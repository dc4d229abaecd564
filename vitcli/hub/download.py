"""`vit download`: a model's files into the Hugging Face cache, then (optionally) its fast-start ONNX copy.

The files come through the one resolver (vitcli.models.resolver.fetch, asking the Hub again); the copy is
vitcli.export.faststart's, checked against the torch model before it is kept. The copy is used only when
a command asks for it (`--backend onnx`); `vit download` says where it is and how to use it.
"""

from __future__ import annotations


def download(spec: str, *, fast_start: bool, log=lambda message: None) -> dict:
    """{"model", "weights", "folder", "fast_start"} (paths as shown to the user)."""
    from vitcli import env
    from vitcli.errors import UsageError, VitError
    from vitcli.export import faststart
    from vitcli.models.resolver import fetch, parse_spec
    from vitcli.output import display

    source = parse_spec(spec)
    if source.kind == "local":
        raise UsageError(
            f"{spec} is a local folder: nothing to download", "`vit export --model FOLDER` makes an ONNX file of it"
        )
    source = fetch(source, refresh=True)
    copy = None
    if fast_start and env.export_enabled():
        import torch

        from vitcli.models.resolver import load_model

        log("writing the fast-start ONNX copy (10-40 s, once)")
        try:
            copy = faststart.save(spec, load_model(spec, device=torch.device("cpu")))
        except VitError as e:  # the download itself succeeded: the copy is an optimisation
            from vitcli import output

            output.warn(f"no fast-start copy: {e.message}")
    return {
        "model": spec,
        "weights": display(source.weights) if source.weights else None,
        "folder": display(source.folder) if source.folder else None,
        "fast_start": display(copy) if copy else None,
    }
