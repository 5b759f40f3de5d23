"""The networks and where their weights come from.

vqgan        the decoder and encoder adapters over taming's modules
scorer       the CLIP adapter over open_clip
vit          open_clip's ViT forward without the bf16 attention copies
loading      Models, loaded by name, path or built-in
cache        the model registry, verified resumable downloads, what `models list/info` show
checkpoints  reading torch checkpoints without running pickled code
"""
