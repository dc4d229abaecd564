"""The names of the files in a run folder (`runs/<command>/<name>/`), in one place: the run writes
them (vitcli.train.run.runs, vitcli.train.report), `vit eval`, `vit push` and a resume read them.
A leaf module: it imports nothing of vitcli, so eval/ may read it without importing training.

    runs/finetune/pets-3/
      config.json, model.safetensors   the kept model in Hub layout (timm's config + label_names + "vitcli")
      run.json                         resolved config, environment, versions, status, final summary
      metrics.jsonl                    one line per logging step and per evaluation
      results.csv, curves.png          derived from metrics.jsonl
      per_class.csv, confusion.png     the kept model on its held-out split (vitcli.eval.reports)
      README.md                        the model card `vit push` writes
      last/state.pt                    the training state `--resume` continues from
    sweeps/<name>/sweep.json, results.md, results.csv, results.png   a sweep's own files
"""

from pathlib import Path

CONFIG = "config.json"
WEIGHTS = "model.safetensors"
RUN_JSON = "run.json"
METRICS = "metrics.jsonl"
RESULTS = "results.csv"
CURVES = "curves.png"
CARD = "README.md"
STATE = Path("last") / "state.pt"
OLD_STATE = "state.pt"  # a state file at the top of the folder (given to --resume directly)
TENSORBOARD = "events.out.tfevents.*"

SWEEP_STATE = "sweep.json"
SWEEP_TABLE = "results.md"
SWEEP_PLOT = "results.png"

OWN_FILES = (RUN_JSON, METRICS, RESULTS, CURVES)  # what a run writes before its first checkpoint
