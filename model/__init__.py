"""AlexNet compute side: the network, two-GPU placement, training loop, evaluation (torch only)."""
