"""Data-side constants from Krizhevsky, Sutskever & Hinton (2012), each with the section it comes from.

The compute-side constants (kernels, LRN, dropout, the optimiser recipe) live in `alexnet.model`,
which must not import this package.
"""

# §2: "we down-sampled the images to a fixed resolution of 256 × 256 ... rescaled the image such
# that the shorter side was of length 256, and then cropped out the central 256×256 patch".
STORED_SIZE = 256

# §4.1: "extracting random 224 × 224 patches (and their horizontal reflections) from the 256×256
# images". Offsets are uniform over 0..STORED_SIZE - CROP_SIZE (= 32) in each axis, as Krizhevsky's
# code draws them (`randint(0, 2·border + 1)` with border 16): 33 × 33 offsets × 2 flips = 2,178
# patches per image, where the paper's text says 2,048 (= 32 × 32 × 2).
CROP_SIZE = 224
MAX_CROP_OFFSET = STORED_SIZE - CROP_SIZE

# §4.1: horizontal reflections, taken with probability one half.
FLIP_PROBABILITY = 0.5

# §4.1: PCA lighting: "α_i is a random variable drawn from a Gaussian with mean zero and standard
# deviation 0.1", drawn once per image each time it is used.
PCA_ALPHA_STD = 0.1

# §2: "We did not pre-process the images in any other way, except for subtracting the mean activity
# over the training set from each pixel": on raw 0–255 values, no division. "mean" is that (the
# default); "std" also divides by the per-channel std (unit-std inputs, about 57× smaller).
NORMALIZE_MODES = ("mean", "std")
