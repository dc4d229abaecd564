"""`vit info`: versions, devices, CPU features, what each choice is here and why, measurements, caches."""

from __future__ import annotations

from typing import Annotated

import typer

from vitcli.cli.options import DeviceOpt, JsonOpt


def info(
    device: DeviceOpt = "auto",
    clear_cache: Annotated[
        bool,
        typer.Option(
            "--clear-cache",
            help="Remove vitcli's cached measurements, fast-start copies, few-shot features, inductor "
            "artefacts and zoo counts (not the Hugging Face cache or datasets), then exit.",
        ),
    ] = False,
    json_out: JsonOpt = False,
) -> None:
    """Show versions, devices, CPU features, the speed choices made here and why, and the caches."""
    from vitcli import output as sink

    if clear_cache:
        from vitcli.accel.info import clear_cache as clear

        removed = clear()
        if json_out:
            sink.emit_json({"removed": removed})
        else:
            for row in removed:
                sink.out().print(f"removed\t{row['path']}\t{_size(row['bytes'])}", soft_wrap=True)
            sink.info(
                f"{len(removed)} cache entr{'y' if len(removed) == 1 else 'ies'} removed; the next run measures again",
                style="dim",
            )
        return
    from vitcli.accel.info import info as gather

    result = gather(device)
    if json_out:
        sink.emit_json(result)
    else:
        _render(result)


def _size(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"


def _render(result: dict) -> None:
    """Six tables (versions, machine, choices, measurements, caches, settings): fitted to the terminal,
    tab-separated in a pipe (vitcli.cli.tables)."""
    from vitcli import output as sink
    from vitcli.cli.tables import Column, print_table

    cpu, dev = result["cpu"], result["devices"]
    versions = [("vitcli", result["vitcli"]), ("python", result["python"]), ("platform", result["platform"])]
    versions += [(name, v or "not installed") for name, v in result["packages"].items()]
    machine = [
        ("cpu", f"{cpu['name']} ({cpu['cores']} cores, torch {cpu['torch_threads']} threads)"),
        ("cpu features", f"{' '.join(cpu['features']) or '-'} (oneDNN {'yes' if cpu['onednn'] else 'no'})"),
        ("cuda", ", ".join(dev["cuda_devices"]) if dev["cuda"] else "no"),
        ("mps", "yes" if dev["mps"] else "no"),
    ]
    measured = [
        (
            m["measured"],
            m["name"] + (f" {m['detail']}" if m["detail"] else ""),
            ", ".join(f"{k}={v}" for k, v in m["verdict"].items() if k != "flags")
            + (" (just now)" if m["new"] else ""),
        )
        for m in result["measurements"]
    ] or [("-", "nothing recorded yet", "")]
    caches = [(c["name"], c["path"], _size(c["bytes"]) if c["exists"] else "absent") for c in result["caches"]]
    sections = [
        ("versions", [Column("package"), Column("version")], versions),
        ("machine", [Column("item"), Column("value")], machine),
        (
            "choices",
            [Column("choice"), Column("value"), Column("why")],
            [(r["choice"], r["value"], r["why"]) for r in result["choices"]],
        ),
        ("measurements", [Column("measured"), Column("what", wrap="path"), Column("result")], measured),
        ("caches", [Column("cache"), Column("path", wrap="path"), Column("size", right=True)], caches),
        ("settings", [Column("setting"), Column("value", wrap="path")], list(result["settings"].items())),
    ]
    for i, (title, columns, rows) in enumerate(sections):
        if not rows:
            continue
        if i:
            sink.out().print()
        print_table(columns, rows, title=title)


def register(app: typer.Typer) -> None:
    app.command("info")(info)
