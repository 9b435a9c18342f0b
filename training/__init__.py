"""EG3D-compatible network, loss, dataset and training-loop modules."""
