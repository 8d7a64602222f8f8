"""cnnlab: the library behind the DVC pipeline (datasets, models, training, evaluation, reports).

It knows nothing about DVC or file layout; the scripts in ``stages/`` do.
"""
