"""Datasets: where they come from (sources), how they are decoded and split (prepare),
and how batches are made from the prepared tensors (batches)."""
