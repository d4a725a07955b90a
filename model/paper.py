"""Every constant of Krizhevsky, Sutskever & Hinton (2012) the code uses, in one place, with its section.

The network (alexnet.py, towers.py) and the training recipe (train.py) read these; the recipe
values are only defaults, every one of them is a flag of the trainer.
"""

# §3.5 and Figure 2: the architecture.
IMAGE_SIZE = 224  # input crop side; conv1 (11×11, stride 4) pads 2 so its output is 55×55
NUM_CLASSES = 1000  # ILSVRC-2012
KERNELS = (96, 256, 384, 384, 256)  # conv1..conv5 output channels, both columns together
FC_WIDTH = 4096  # fc6 and fc7 neurons, both columns together
COLUMNS = 2  # the two GPUs' columns; conv2, conv4, conv5 see only their own column (groups=2)
PARAMETER_COUNT = 60_965_224  # what the layers above hold with NUM_CLASSES outputs

# §3.3 local response normalisation, after ReLU in conv1 and conv2:
#   b_i = a_i / (k + α Σ_{j=max(0,i-n/2)}^{min(N-1,i+n/2)} a_j²)^β
LRN_SIZE = 5  # n, channels in the window
LRN_K = 2.0  # k
LRN_ALPHA = 1e-4  # α, multiplies the plain sum of squares (torch divides its alpha by n: see alexnet.py)
LRN_BETA = 0.75  # β

# §3.4 overlapping pooling: z×z windows every s pixels with s < z.
POOL_KERNEL = 3  # z
POOL_STRIDE = 2  # s

# §4.2 dropout on the outputs of the first two fully connected layers (fc6, fc7).
DROPOUT = 0.5

# §5 initialisation.
INIT_STD = 0.01  # every weight ~ N(0, 0.01²)
BIAS_ONE_LAYERS = ("conv2", "conv4", "conv5", "fc6", "fc7")  # biases 1 (positive ReLU inputs early on); others 0

# §5 recipe: SGD, v ← 0.9·v − 0.0005·ε·w − ε·∂L/∂w, w ← w + v.
BATCH_SIZE = 128
MOMENTUM = 0.9
WEIGHT_DECAY = 5e-4
LEARNING_RATE = 0.01  # equal for all layers
LR_DROP_FACTOR = 10.0  # lr divided by this when validation error stops improving ...
MAX_LR_DROPS = 3  # ... which happened three times before termination
EPOCHS = 90  # "roughly 90 cycles through the training set"
