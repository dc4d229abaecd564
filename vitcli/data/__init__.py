"""Data: reading images, datasets and their splits, the one image -> batch loader, and the transforms."""
