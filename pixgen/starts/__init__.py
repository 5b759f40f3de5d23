"""Everything before step 1: the tensor a run starts from.

    images      init images and noise (the pictures a start is fitted to)
    candidates  candidate starts and the one function that scores them by the run's CLIP terms
    composed    a plain background and a centred subject, chosen by CLIP (`--init composed`)
    make        `make_start`: the one start a run begins from

The kinds of start, in the order they are tried: a given start (restyle's frames), an init
image or noise fitted by the drawer, the composed start, the prior's best sample (`--init
prior`, pixgen.prior.start), the best of `--init-draws` random starts, else the drawer's own
random start (`--init tokens|flat|mean` for the VQGAN)."""
