# The tuned batch-size study: SGD against LARS with equal tuning, on top of the shared recipe:
#   python sweep.py configs/cpu_sweep.py configs/large_batch.py configs/study.py --data_dir=PATH_TO/cifar10
# At batch 128, 512, 2048 and 8192 each optimizer gets a grid of 4 peak LRs spaced 2x apart
# (LARS: lr x tc named below; peak LR = lr x tc / TRUST_COEF), the same number of runs for
# both; a grid whose best run is at an edge gets another LR beyond it (sweep.py runs no extra
# seeds until the best is inside its grid). The best LR of each then runs with 2 more seeds.
# Batch 256, 1024 and 4096 run once per optimizer at the LR of the rule in large_batch.py.
# The grid LRs are listed middle first, so that a partial grid says the most; extensions come
# last (results/study/README.md says which grids grew and why).
SWEEP_BATCH_SIZES = [8192, 128, 2048, 512, 256, 1024, 4096]
SWEEP_REFERENCE = "results/cpu_sweep"
sgd_grid = {128: [0.1, 0.2, 0.05, 0.4, 0.8],
            512: [0.4, 0.8, 0.2, 1.6, 3.2],
            2048: [0.4, 0.8, 0.2, 1.6, 3.2],
            8192: [0.8, 1.6, 0.4, 3.2]}
lars_grid = {128: [0.005, 0.01, 0.0025, 0.02, 0.04],  # lr x tc
             512: [0.01, 0.02, 0.005, 0.04, 0.08],
             2048: [0.01, 0.02, 0.005, 0.04, 0.08],
             8192: [0.02, 0.04, 0.01, 0.08]}
if BATCH_SIZE in sgd_grid:
    SWEEP_PEAK_LRS = [x / TRUST_COEF for x in lars_grid[BATCH_SIZE]] if WITH_LARS else sgd_grid[BATCH_SIZE]
    SWEEP_EXTRA_SEEDS = [1, 2]
else:
    SWEEP_PEAK_LRS = None  # one run at the rule's LR
    SWEEP_EXTRA_SEEDS = []
