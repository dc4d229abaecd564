"""Analysis: attention extraction, the maths of the paper's figures, drawing them (`vit visualize`)."""
