"""`vit info`: versions, devices, CPU features, what each choice is here and why, measurements, caches."""

from __future__ import annotations

from typing import Annotated

import typer

from vitcli.cli.options import DeviceOpt, JsonOpt


def info(
    device: DeviceOpt = "auto",
    clear_cache: Annotated[bool, typer.Option(
        "--clear-cache", help="Remove vitcli's cached measurements, fast-start copies, few-shot features, inductor "
                              "artefacts and zoo counts (not the Hugging Face cache or datasets), then exit.")] = False,
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
            sink.info(f"{len(removed)} cache entr{'y' if len(removed) == 1 else 'ies'} removed; the next run measures "
                      "again", style="dim")
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
    from vitcli import output as sink

    out = sink.out()
    lines = [f"vitcli\t{result['vitcli']}", f"python\t{result['python']}", f"platform\t{result['platform']}"]
    lines += [f"{name}\t{v or 'not installed'}" for name, v in result["packages"].items()]
    cpu = result["cpu"]
    lines += [f"cpu\t{cpu['name']} ({cpu['cores']} cores, torch {cpu['torch_threads']} threads)",
              f"cpu features\t{' '.join(cpu['features']) or '-'} (oneDNN {'yes' if cpu['onednn'] else 'no'})"]
    dev = result["devices"]
    lines.append(f"cuda\t{', '.join(dev['cuda_devices']) if dev['cuda'] else 'no'}")
    lines.append(f"mps\t{'yes' if dev['mps'] else 'no'}")
    lines.append("")
    lines += [f"{row['choice']}\t{row['value']}\t{row['why']}" for row in result["choices"]]
    lines.append("")
    for m in result["measurements"]:
        verdict = ", ".join(f"{k}={v}" for k, v in m["verdict"].items() if k != "flags")
        lines.append(f"measured {m['measured']}\t{m['name']}{' ' + m['detail'] if m['detail'] else ''}\t{verdict}"
                     + ("\t(just now)" if m["new"] else ""))
    if not result["measurements"]:
        lines.append("measured\tnothing recorded yet")
    lines.append("")
    lines += [f"cache {c['name']}\t{c['path']}\t{_size(c['bytes']) if c['exists'] else 'absent'}"
              for c in result["caches"]]
    lines += [f"setting\t{k}={v}" for k, v in result["settings"].items()]
    for line in lines:
        out.print(line, soft_wrap=True, highlight=False)


def register(app: typer.Typer) -> None:
    app.command("info")(info)
