"""Benchmarking: vitcli's model path against a plain timm loop and the machine's ceiling (`vit benchmark`)."""
