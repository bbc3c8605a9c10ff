# Equal recipe effort for SGD and LARS, chosen on a validation split. On top of the study's recipe:
#   python sweep.py configs/cpu_sweep.py configs/large_batch.py configs/recipe.py --data_dir=PATH_TO/cifar10
# 5,000 training images (500 per class) are held out; every choice is made on their final top-1,
# the test set only reports. Batch 128 and 8192: large_batch.py's shared recipe, then the same
# with one part changed at a time, each optimizer at its 20-epoch study's best peak LR. Batch
# 2048 and 8192: the original recipe (cpu_sweep.py alone) with a grid of peak LRs 2x apart.
# results/recipe/README.md says why each grid and second seed is there and what each run showed.
VALIDATION_SIZE = 5000
SWEEP_BATCH_SIZES = [8192, 128, 2048]
SWEEP_REFERENCE = None
SWEEP_BREADTH_FIRST = True  # every recipe's first seed before any second

# Each recipe: what it changes from large_batch.py's shared recipe.
recipes = {
    "shared": {},
    "no_label_smoothing": {"LABEL_SMOOTHING": 0.0},
    "no_zero_init": {"ZERO_INIT_RESIDUAL": False},
    "no_exclusion": {"EXCLUDE_BN_BIAS": False},  # biases and BN weights decayed, and with LARS adapted
    "original_warmup": {"WARMUP_EPOCHS": 2, "WARMUP_MULTIPLIER": 2.0},  # cpu_sweep.py's: 2 epochs from half the peak
    "original": {"WARMUP_EPOCHS": 2, "WARMUP_MULTIPLIER": 2.0, "LABEL_SMOOTHING": 0.0, "ZERO_INIT_RESIDUAL": False,
                 "EXCLUDE_BN_BIAS": False, "LARS_WEIGHT_DECAY": 5e-3, "TRUST_COEF": 0.1},  # cpu_sweep.py's settings
}
ablations = ["shared", "no_label_smoothing", "no_zero_init", "no_exclusion", "original_warmup"]
SWEEP_RECIPES = {128: ablations, 8192: [*ablations, "original"], 2048: ["original"]}.get(BATCH_SIZE)
for name, value in recipes.get(RECIPE, {}).items():
    globals()[name] = value  # a setting, as if assigned by name

# Peak LRs in the order they run (middle first, extensions last); LARS's as lr x tc, the peak
# LR being lr x tc / TRUST_COEF. The ablations run at each optimizer's best of the 20-epoch study.
study_best = {(128, False): 0.4, (128, True): 0.01, (8192, False): 0.8, (8192, True): 0.02}
original_grid = {(2048, False): [0.4, 0.2, 0.8, 0.1, 0.05], (2048, True): [0.04, 0.02, 0.08, 0.01, 0.005],
                 (8192, False): [0.4, 0.2, 0.8, 0.1, 0.05], (8192, True): [0.02, 0.01, 0.04, 0.005, 0.0025]}
if RECIPE == "original":
    peaks = original_grid.get((BATCH_SIZE, WITH_LARS))
else:
    peaks = [study_best[BATCH_SIZE, WITH_LARS]] if (BATCH_SIZE, WITH_LARS) in study_best else None
if peaks is not None:
    SWEEP_PEAK_LRS = [x / TRUST_COEF for x in peaks] if WITH_LARS else peaks

# (batch, with LARS, recipe) whose best LR also runs with seed 1.
second_seed = {(8192, False, "shared"), (8192, False, "no_zero_init"), (8192, False, "original"),
               (8192, True, "shared"), (8192, True, "no_label_smoothing"), (8192, True, "no_zero_init"),
               (8192, True, "no_exclusion"), (8192, True, "original"),
               (2048, False, "original"), (2048, True, "original"),
               (128, False, "shared"), (128, False, "no_label_smoothing"), (128, False, "no_zero_init"),
               (128, False, "no_exclusion"), (128, False, "original_warmup"),
               (128, True, "shared"), (128, True, "no_label_smoothing"), (128, True, "no_zero_init"),
               (128, True, "no_exclusion"), (128, True, "original_warmup")}
SWEEP_EXTRA_SEEDS = [1] if (BATCH_SIZE, WITH_LARS, RECIPE) in second_seed else []
