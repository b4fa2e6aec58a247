"""Research at scale: sweeps over quantization configurations, mixed-precision search and
dataset evaluation, on a process pool or a Ray cluster.

    grid       a grid of configuration values -> configurations -> quantization plans
    metrics    output SQNR, cosine, accuracy and agreement, accumulated and mergeable
    engines    run a function over items on a local process pool or on Ray, retrying lost work
    sweep      quantize and measure every configuration of a grid, cached and resumable
    evaluate   stream a dataset of .npy/.npz shards through a model in chunks
    search     per-op mixed precision under an SQNR or accuracy target

Every number comes from qengine's own runtime; nothing here imports Ray unless `--engine ray`
asks for it.
"""
