# The original's budget: 200 epochs at batch 128 and 8192, SGD and LARS, chosen on validation.
#   python sweep.py configs/cpu_sweep.py configs/large_batch.py configs/recipe.py configs/study200.py --data_dir=PATH_TO/cifar10
# recipe.py defines the recipe variants; this file picks one per batch size and optimizer and
# replaces recipe.py's runs with these:
# - Batch 8192: 3 peak LRs 2x apart centred on the 20-epoch best, extended where the best
#   (on validation) is at an edge; then one more seed of the best.
# - Batch 128: the 20-epoch best peak LR with 2 seeds.
# The schedule stretches to 200 epochs: the warm-up keeps its epochs, the poly decay ends at the
# last step. Runs go breadth first: the four centres, then the 8192 neighbours, then the seeds.
# Evaluation (precise BN, 5,000 validation and 10,000 test images) after every 2nd epoch and
# the last keeps it under a tenth of the run (README, Speed); training is the same as with 1.
#
# `chosen` below is results/recipe's choice on validation (results.md, "Recipe choice"); a test
# keeps the two equal. `extensions` are the peak LRs added past an edge, each once that grid's
# best on validation was the edge (results/study200/results.md marks it; a test checks each):
# - 8192 SGD: 0.2, the largest of 0.05, 0.1, 0.2, ended best (validation 81.68 against 78.02 at
#   0.1), so 0.4; 0.4 then ended below 0.2 (validation 79.66), so SGD's grid stops there.
# - 8192 LARS: lr x tc 0.04, the largest of 0.01, 0.02, 0.04, ended best (validation 86.96
#   against 84.88 at 0.02), so 0.08; 0.08 then ended below 0.04 (validation 86.82), so LARS's
#   grid stops there.
NUM_EPOCHS = 200
VALIDATION_SIZE = 5000
EVAL_EVERY = 2
SWEEP_BATCH_SIZES = [8192, 128]
SWEEP_BREADTH_FIRST = True
SWEEP_TARGETS = [70, 80, 90]
SWEEP_REFERENCE = "results/recipe"  # the 20-epoch runs of the same recipes, LRs and split

# (batch, with LARS): (recipe, centre peak LR; LARS's as lr x tc, peak = lr x tc / TRUST_COEF)
chosen = {(8192, False): ("original", 0.1), (8192, True): ("no_zero_init", 0.02),
          (128, False): ("no_zero_init", 0.4), (128, True): ("no_zero_init", 0.01)}
extensions = {(8192, False): [0.4], (8192, True): [0.08]}  # in the same units as `chosen`
if (BATCH_SIZE, WITH_LARS) in chosen:
    recipe_name, centre = chosen[BATCH_SIZE, WITH_LARS]
    SWEEP_RECIPES = [recipe_name]
    peaks = [centre, centre / 2, centre * 2] if BATCH_SIZE == 8192 else [centre]
    peaks += extensions.get((BATCH_SIZE, WITH_LARS), [])
    SWEEP_PEAK_LRS = [x / TRUST_COEF for x in peaks] if WITH_LARS else peaks
    SWEEP_EXTRA_SEEDS = [1]
