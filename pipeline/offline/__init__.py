"""Run once per data set: ILSVRC discovery, image normalisation, prepare, pca-stats, verify, synth, the FFCV export."""
