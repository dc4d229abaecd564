"""Weights into a built model: every tensor accounted for, or one clear error.

timm's own loader forgives: a checkpoint whose classifier does not match `num_classes` has its head
dropped and a fresh random one made (then `vit predict` answers with random labels, different on each
run), and missing or unexpected keys load with `strict=False`. A model folder or a run folder is
loaded here instead, strictly: same keys, same shapes, or a `ModelError` naming what differs (the class
counts of config.json and of the weights' head, the keys), and a damaged file (truncated, random bytes,
header only) says which file and what to do. Pickled `.bin` weights load with `weights_only=True`.
"""

from __future__ import annotations

from pathlib import Path

from vitcli.errors import ModelError
from vitcli.output import display

DAMAGED_HINT = "delete it and fetch the model again (`vit download MODEL` for a Hub model), or train the run again"


def read_state_dict(path: Path) -> dict:
    """The tensors of a weights file; ModelError when the file is damaged or not a state dict."""
    import torch

    path = Path(path)
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - SafetensorError, UnpicklingError, RuntimeError, OSError, EOFError
        if isinstance(e, OSError) and not isinstance(e, EOFError) and e.errno is not None:
            raise  # a file that cannot be read (permissions, a full disk): errors.describe says so
        reason = (str(e).strip().splitlines() or [type(e).__name__])[0][:160]
        raise ModelError(f"the weights file {display(path)} is damaged ({reason})", DAMAGED_HINT) from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ModelError(f"{display(path)} does not hold a model's weights", DAMAGED_HINT)
    return state


def _head_key(model) -> str | None:
    classifier = (getattr(model, "pretrained_cfg", None) or {}).get("classifier") or "head"
    name = classifier[0] if isinstance(classifier, (list, tuple)) else classifier
    return f"{name}.weight"


def load_strict(model, path: Path, config_name: str = "config.json") -> None:
    """Load `path` into `model` with every key and shape equal; ModelError otherwise."""
    state = read_state_dict(path)
    own = model.state_dict()
    head = _head_key(model)
    if head in own and head in state and own[head].shape != state[head].shape:
        raise ModelError(
            f"{config_name} describes {own[head].shape[0]} classes but the weights' head "
            f"({display(Path(path).name)}) has {state[head].shape[0]}",
            "the config and the weights belong to different models: fix num_classes in config.json, or use "
            "the folder the weights came with",
        )
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [
        f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}"
        for k in own
        if k in state and state[k].shape != own[k].shape
    ]
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing ({', '.join(missing[:3])}{', ...' if len(missing) > 3 else ''})")
        if unexpected:
            parts.append(
                f"{len(unexpected)} unexpected ({', '.join(unexpected[:3])}{', ...' if len(unexpected) > 3 else ''})"
            )
        if shapes:
            parts.append(f"{len(shapes)} of another shape ({'; '.join(shapes[:2])})")
        raise ModelError(
            f"the weights {display(Path(path).name)} do not fit the architecture of {config_name}: "
            + ", ".join(parts)
            + " tensors",
            "the config and the weights belong to different models; use the folder the weights came with",
        )
    model.load_state_dict(state, strict=True)
