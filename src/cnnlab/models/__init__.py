"""Models: the registry and options (:mod:`cnnlab.models.options`, torch-free, so params
validation never pays torch's import time) and the builders (:mod:`cnnlab.models.zoo`)."""
