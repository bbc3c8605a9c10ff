"""Every setting of train.py, val.py and sweep.py: edit here, or override per run with
`python train.py [configs/FILE.py] [--name=value ...]` (see README.md).

Defaults reproduce the original project's main protocol (batch 128, ResNet-50, 200 epochs).
The lines marked "follows K" are recomputed from the final K when a config file or override
changes K without setting them; setting BATCH_SIZE alone sets K = BATCH_SIZE / BASE_BATCH_SIZE.
Overrides (--name=value) win over config files.
"""

# --- batch size and learning rate ---
BASE_BATCH_SIZE = 128  # the batch size BASE_LR is tuned for
K: int | float = 1  # batch multiple: BATCH_SIZE = BASE_BATCH_SIZE * K
BATCH_SIZE = BASE_BATCH_SIZE * K  # global batch per optimizer step, all processes (follows K)
MICRO_BATCH_SIZE: int | None = None  # images per forward/backward pass; None = whole per-process batch
BASE_LR = 0.05  # learning rate at BASE_BATCH_SIZE
LR = BASE_LR * K  # LR at the start of warm-up: the linear scaling rule (follows K)

# --- optimizer ---
WITH_LARS = False  # True: LARS (lars.py); False: torch.optim.SGD
MOMENTUM = 0.9  # momentum factor
WEIGHT_DECAY = 5e-4  # weight decay with SGD
LARS_WEIGHT_DECAY = 5e-3  # weight decay with LARS (the original's LARS runs)
TRUST_COEF = 0.1  # LARS trust coefficient (the paper's eta)
EXCLUDE_BN_BIAS = False  # True: biases and norm weights get no weight decay (and, with LARS, no adaptation)
LABEL_SMOOTHING = 0.0  # label smoothing of the cross-entropy loss (0 = none)

# --- schedule, stepped once per optimizer step ---
WARMUP_EPOCHS: int | float = 5  # linear warm-up from LR to LR * WARMUP_MULTIPLIER (may be fractional); 0 = start at the peak
WARMUP_MULTIPLIER = 2.0  # peak LR = LR * WARMUP_MULTIPLIER
LR_SCHEDULE = "poly"  # after warm-up: "poly" (to END_LR at the last step) or "step"
POLY_POWER = 2.0  # power of the polynomial decay
END_LR = 1e-5 * K  # LR at the last step with "poly" (follows K)
STEP_EPOCHS = 50  # with "step": multiply the LR by STEP_GAMMA every STEP_EPOCHS after warm-up
STEP_MILESTONES: list | None = None  # with "step": multiply the LR by STEP_GAMMA at these epochs (counted from the start, past warm-up) instead
STEP_GAMMA = 0.1  # with "step": decay factor
NUM_EPOCHS = 200  # epochs of training

# --- model ---
MODEL = "resnet50_imagenet"  # a name from models.MODELS; the original used torchvision's ResNet-50
HE_INIT = True  # Kaiming-normal init of conv and linear weights
ZERO_INIT_RESIDUAL = False  # True: the last BN of each residual block starts with gamma = 0 (Goyal et al.)

# --- data ---
DATA_DIR = "data"  # image folders DATA_DIR/{train,test}/<class>/, or torchvision's CIFAR-10 here
TRAIN_SUBSET: int | None = None  # None = all 50,000 training images; N = first N of a fixed shuffle
VALIDATION_SIZE = 0  # training images held out to choose LRs and recipes on (class-balanced, fixed); 0 = none
NUM_WORKERS = 2  # processes that decode an image folder into the cache (first run only)

# --- speed ---
AMP = False  # mixed precision: bf16 autocast on CPU, fp16 autocast + GradScaler on CUDA
CHANNELS_LAST = True  # channels-last memory format for the model and batches
COMPILE = False  # torch.compile the model
DETERMINISTIC = False  # True: deterministic CUDA kernels (slower), so a resumed GPU run matches an uninterrupted one
CUDA_GRAPHS = False  # True: the training step as CUDA graphs (torch.compile "reduce-overhead" of model and optimizer step); one CUDA process
GHOST_BN: bool | None = None  # True: BN statistics per MICRO_BATCH_SIZE images in one pass (ghost BN); None = on CUDA only
PRECISE_BN = 0  # training micro-batches to recompute BN statistics with before each evaluation; 0 = off
EVAL_EVERY = 1  # evaluate after every N-th epoch, the last and a diverged one; training is the same for any N

# --- run ---
CHECKPOINT_DIR = "checkpoint"  # where withLars-<batch>.pth / noLars-<batch>.pth are written
RESUME = False  # continue the run saved in CHECKPOINT_DIR from its last epoch
SEED = 0  # seeds the model init, the data order and the augmentation
DIVERGENCE_LOSS = 23.0  # stop a run whose epoch's mean training loss exceeds this (10 x ln 10) or is not finite
LAYER_STATS_EVERY = 50  # per-tensor norms, trust ratios, update sizes at each epoch's first step and every N-th; 0 = off
DEVICE = "auto"  # "auto" (cuda if available, else cpu), "cpu", "cuda" or "cuda:N"
NUM_THREADS = 0  # CPU threads per process; 0 = the cores divided among the local processes

# --- sweep.py ---
SWEEP_BATCH_SIZES = [128, 256, 512, 1024, 2048, 4096, 8192]  # one training run per batch size...
SWEEP_WITH_LARS = [False, True]  # ...and per optimizer
SWEEP_PEAK_LRS: list | None = None  # a grid: one run per peak LR (LR * WARMUP_MULTIPLIER); None = the LR as set
SWEEP_EXTRA_SEEDS: list = []  # then re-run the best peak LR of each (batch, optimizer) with these seeds
SWEEP_BREADTH_FIRST = False  # True: every cell's first peak LR, then every cell's second, ..., then extra seeds
SWEEP_RECIPES: list | None = None  # recipe variants: each cell runs once per name, with RECIPE set to it
RECIPE = ""  # the variant's name in a SWEEP_RECIPES sweep; a preset reads it to change the settings
SWEEP_TARGETS = [50, 70, 80]  # test top-1 % targets of a grid's steps-to-target table and figure
SWEEP_REFERENCE: str | None = None  # a sweep's results folder whose cells the tables show for reference
RESULTS_DIR = "results"  # sweep.py writes RESULTS_DIR/<preset>/results.{json,md} and figures
