"""Inference: the one batched forward pass, `vit predict`, the fast-start copy and the CPU kernels."""
