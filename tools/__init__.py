"""Thin click front ends wiring alexnet.pipeline to alexnet.model."""
