"""The "shapes" world: a synthetic 64x64 world with a trained VQGAN+CLIP pair that ships with
pixgen, so generation can run (and be graded) fully offline."""
