"""The learned prior over VQGAN codes (DALL-E style), one word for each piece:

model       the transformer (nanoGPT-plain), its key/value cache and `sample`
conditions  what it is asked for: a CLIP embedding, caption tokens, an ImageNet class
classes     the ImageNet class CLIP picks for a prompt (class-conditional priors)
registry    the registered priors: names, downloads, conversion and loading
start       the start that draws code grids and ranks them by the run's CLIP terms
"""
