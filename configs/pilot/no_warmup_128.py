# Pilot: does the recipe's warm-up cost batch 128 its accuracy? SGD at batch 128, peak LR 0.1
# (recipe.py's cell: 82.03 %, against 85.05 % with the original recipe), with no warm-up and
# the rest of the recipe. On top of cpu_sweep.py and large_batch.py:
#   python sweep.py configs/cpu_sweep.py configs/large_batch.py configs/pilot/no_warmup_128.py --results_dir=results/study_pilot --data_dir=PATH_TO/cifar10
SWEEP_BATCH_SIZES = [128]
SWEEP_WITH_LARS = [False]
SWEEP_PEAK_LRS = [0.1]
WARMUP_EPOCHS = 0
