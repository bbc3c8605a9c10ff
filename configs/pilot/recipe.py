# Pilot run set 1 of the study (configs/large_batch.py): the whole shared recipe, SGD and LARS at
# batch 8192 and 128, one peak LR each. On top of cpu_sweep.py and large_batch.py:
#   python sweep.py configs/cpu_sweep.py configs/large_batch.py configs/pilot/recipe.py --results_dir=results/study_pilot --data_dir=PATH_TO/cifar10
# Peak LRs: LARS lr x tc = 0.02 at 8K (the best of three tried with the original recipe) and
# 0.01 at 128 (the original's tc 0.1 x LR 0.1, 84.51 %); SGD 0.1 at 128 (the original's) and
# 1.6 at 8K (near chance after 5 epochs with the original warm-up).
SWEEP_BATCH_SIZES = [8192, 128]
SWEEP_WITH_LARS = [True, False]
lr_x_tc = {8192: 0.02, 128: 0.01}.get(BATCH_SIZE, 0.02)
SWEEP_PEAK_LRS = [lr_x_tc / TRUST_COEF] if WITH_LARS else [{8192: 1.6, 128: 0.1}.get(BATCH_SIZE, 0.1)]
