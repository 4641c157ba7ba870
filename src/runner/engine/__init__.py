"""The population training engine: batches, loss, optimizer, early stopping, checkpoints."""
