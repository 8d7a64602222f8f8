"""cnnlab_compare: comparisons across DVC experiments, outside the pipeline.

``cnnlab-compare`` (:mod:`cnnlab_compare.cli`) reads what finished experiments committed
(``dvc exp show``, their metrics and histories from the DVC cache) and writes tables,
statistics over seeds, figures and one HTML page; ``cnnlab-plots``
(:mod:`cnnlab_compare.plots`) renders DVC's own plots offline. The pipeline's library
(cnnlab) never imports this package: a DVC stage cannot depend on it.
"""
