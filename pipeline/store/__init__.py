"""The on-disk contract between the offline tools and the loaders: shards, manifest, pca.json, betons.

Everything here reads or writes one of those files and checks what it reads back; nothing here
decodes an image or knows about a loader.
"""
