"""The DynamicMoE plasticity study (seed 000, Section 3.1): a chunked continual stream on which a 3-layer CNN with
a 3-layer MLP is trained while the MLP is expanded at every chunk start by one of several methods.

Layout: `data` loads images (`glyphs` draws the offline real-label set), `stream` splits them into chunks and sets
the probe batch aside, `models` holds the CNN and MLP building blocks, `methods` one module per expansion method
behind a registry, `study` the runner (the reference's GradScaler update, the plasticity gap's fresh copy),
`diagnostics` dead units and effective rank, `figures` the Fig. 2 style plot and the diagnostics figure, `pilot`
and `cost` the regime-choice table and the per-config cost projection.
"""
