"""One module per command: parse options, call one core function, render its result.

Command modules import typer and the standard library only; the core they call imports torch.
"""
