"""AlexNet data side: ILSVRC discovery, image normalisation, shards, prepare, PCA, loaders."""
