"""Readers for the model formats that are programs (TorchScript, ``torch.export``), checked
statically before anything in them runs; :func:`edgeproof.models.loading.load_model` is the
entry point."""
