"""The DynamicMoE plasticity study (seed 000, Section 3.1): a chunked continual stream on which a 3-layer CNN with
a 3-layer MLP is trained while the MLP is expanded at every chunk start by one of several methods.

Layout: `data` loads images, `stream` splits them into chunks and samples batches, `models` holds the CNN and
MLP building blocks, `methods` one module per expansion method behind a registry, `study` the runner and
`figures` the Fig. 2 style plot.
"""
