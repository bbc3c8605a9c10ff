# The original's budget: 200 epochs at batch 128 and 8192, SGD and LARS on one recipe, each LR chosen on validation.
#   python sweep.py configs/cpu_sweep.py configs/large_batch.py configs/recipe.py configs/study200.py --data_dir=PATH_TO/cifar10
# recipe.py defines the recipes; this file gives each batch size and optimizer its recipes and
# their grids of peak LRs, in the order they run (breadth first: every grid's first LR, then
# every second, ..., then the extra seeds of each grid's best). results/study200/README.md says
# why each grid is what it is and what each run showed; a test keeps the grids' extensions and
# the recipes' choice equal to what results/study200/results.json ranks on validation.
# Evaluation (precise BN, 5,000 validation and 10,000 test images) after every 2nd epoch and the
# last; training is the same as with 1.
NUM_EPOCHS = 200
VALIDATION_SIZE = 5000
EVAL_EVERY = 2
SWEEP_BATCH_SIZES = [128, 8192]
SWEEP_BREADTH_FIRST = True
SWEEP_TARGETS = [70, 80, 90]
SWEEP_REFERENCE = "results/recipe"  # the 20-epoch runs of the same recipes, LRs and split

# (batch, with LARS): {recipe: peak LRs, LARS's as lr x tc (peak = lr x tc / TRUST_COEF)}.
# "no_zero_init" is the one recipe of the answer, for both optimizers; "original" keeps SGD's
# first 8192 cell as a second SGD row; "calibration" is He et al.'s ResNet-20 recipe, below.
grids = {
    (128, False): {"calibration": [0.1], "no_zero_init": [0.4, 0.2, 0.1, 0.05]},
    (128, True): {"no_zero_init": [0.01, 0.005, 0.02, 0.0025]},
    (8192, False): {"original": [0.1, 0.05, 0.2, 0.4], "no_zero_init": [0.4, 0.2, 0.8, 1.6, 3.2, 0.1]},
    (8192, True): {"no_zero_init": [0.02, 0.01, 0.04, 0.08, 0.16]},
}
extra_seeds = {"no_zero_init": [1, 2], "original": [1], "calibration": []}

# He et al. 2016, section 4.2, on our data and protocol: SGD, momentum 0.9, weight decay 1e-4 on
# every parameter, batch 128, LR 0.1 from the first step, divided by 10 at 32k and 48k steps and
# stopped at 64k (351 steps per epoch on 45,000 images: epochs 91, 137 and 182).
if RECIPE == "calibration":
    NUM_EPOCHS = 182
    WARMUP_EPOCHS = 0
    WARMUP_MULTIPLIER = 1.0
    LR_SCHEDULE = "step"
    STEP_MILESTONES = [91, 137]
    STEP_GAMMA = 0.1
    WEIGHT_DECAY = 1e-4
    LABEL_SMOOTHING = 0.0
    ZERO_INIT_RESIDUAL = False
    EXCLUDE_BN_BIAS = False

cell_grids = grids.get((BATCH_SIZE, WITH_LARS), {})
SWEEP_RECIPES = list(cell_grids) or None
if RECIPE in cell_grids:
    SWEEP_PEAK_LRS = [x / TRUST_COEF for x in cell_grids[RECIPE]] if WITH_LARS else cell_grids[RECIPE]
    SWEEP_EXTRA_SEEDS = extra_seeds[RECIPE]
