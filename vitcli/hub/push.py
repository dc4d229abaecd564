"""`vit push RUN REPO_ID`: publish a run folder as a timm model repository on the Hugging Face Hub.

    from vitcli.hub.push import push
    push("runs/finetune/pets-3", "me/vit-pets")   # -> {"url", "repo_id", "revision", "commit", "files"}

The run folder is already in Hub layout (timm's config.json with label_names, model.safetensors), so
after the push `vit predict --model hf-hub:REPO_ID` and `timm.create_model("hf-hub:REPO_ID",
pretrained=True)` load it. vit push writes the model card into the run folder (README.md, vitcli.hub.card;
one the user wrote is kept), then uploads with huggingface_hub: `create_repo(exist_ok=True)`,
`create_branch` for `--revision`, one `upload_folder` of the model, the card, run.json, metrics.jsonl,
results.csv, curves.png and TensorBoard's event files (the Hub shows them). Not uploaded: the
training state (last/, optimizer included) and W&B's folder.
"""

from __future__ import annotations

from pathlib import Path

from vitcli import env, output
from vitcli.errors import UsageError, VitError
from vitcli.eval.reports import CONFUSION_FILES
from vitcli.hub import card
from vitcli.output import atomic_write
from vitcli.train import files
from vitcli.train.run import runs

UPLOADED = [
    files.CARD,
    files.CONFIG,
    files.WEIGHTS,
    files.RUN_JSON,
    files.METRICS,
    files.RESULTS,
    files.CURVES,
    *CONFUSION_FILES,
    files.TENSORBOARD,
]


def check_run_folder(run: Path) -> Path:
    folder = Path(run).expanduser()
    if not folder.is_dir():
        raise UsageError(f"{folder}: no such run folder", "give a run folder, e.g. runs/finetune/pets-3")
    missing = [n for n in (files.CONFIG, files.WEIGHTS) if not (folder / n).is_file()]
    if missing:
        raise UsageError(
            f"{folder} has no {' and no '.join(missing)}: there is no model to push",
            "push a run folder whose run has evaluated at least once (its best model is saved then)",
        )
    return folder


def write_card(folder: Path, repo_id: str) -> tuple[Path, bool]:
    """README.md in the run folder: (path, written now). A card the user wrote (without our mark) is kept."""
    path = folder / files.CARD
    if path.is_file() and card.MARK not in path.read_text(encoding="utf-8", errors="replace"):
        return path, False
    return atomic_write(path, card.model_card(folder, repo_id)), True


def push(
    run: str | Path, repo_id: str, *, private: bool = False, revision: str | None = None, message: str | None = None
) -> dict:
    folder = check_run_folder(Path(run))
    if "/" not in repo_id or repo_id.count("/") > 1 or not all(repo_id.split("/")):
        raise UsageError(f"REPO_ID {repo_id!r} is not of the form owner/name", "e.g. vit push RUN my-user/vit-pets")
    if env.offline():
        raise UsageError("offline mode is on: vit push needs the network", "drop --offline / unset HF_HUB_OFFLINE")
    status = runs.read_run_json(folder).get("status")
    if status not in (None, "finished"):
        output.warn(f"the run in {folder} did not finish (status: {status}): pushing its best model so far")
    readme, written = write_card(folder, repo_id)
    output.info(f"{'wrote' if written else 'kept'} the model card {readme}", style="dim")

    import huggingface_hub
    from huggingface_hub import HfApi
    from huggingface_hub.utils import disable_progress_bars

    huggingface_hub.constants.HF_HUB_OFFLINE = False
    if not output.show_progress():
        disable_progress_bars()
    api = HfApi(endpoint=env.endpoint(), library_name="vitcli", library_version=__import__("vitcli").__version__)
    try:
        url = api.create_repo(repo_id, private=private, exist_ok=True)
        if revision and revision != "main":
            api.create_branch(repo_id, branch=revision, exist_ok=True)
        files = sorted(p.name for pattern in UPLOADED for p in folder.glob(pattern) if p.is_file())
        output.info(f"uploading {len(files)} files to {repo_id}" + (f" ({revision})" if revision else ""))
        info = api.upload_folder(
            repo_id=repo_id,
            folder_path=str(folder),
            revision=revision,
            allow_patterns=UPLOADED,
            commit_message=message or f"vit push {folder.name}",
        )
    except VitError:
        raise
    except Exception as e:
        raise _explained(e, repo_id) from e
    return {
        "url": str(url),
        "repo_id": repo_id,
        "revision": revision or "main",
        "commit": info.oid,
        "files": files,
        "model": f"hf-hub:{repo_id}" + (f"@{revision}" if revision else ""),
    }


def _explained(e: Exception, repo_id: str) -> Exception:
    """The Hub's answers a user can act on; anything else is left to vitcli.errors."""
    status = getattr(getattr(e, "response", None), "status_code", None)
    if status in (401, 403):
        return VitError(
            f"the Hub refused to create or write {repo_id} (HTTP {status})",
            "log in with `hf auth login` (or set HF_TOKEN) with a token that may write to that owner",
        )
    return e
