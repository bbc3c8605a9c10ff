# Pilot ablation of the study's recipe (configs/large_batch.py): LARS at batch 8192, lr x tc = 0.02,
# with one part of the recipe undone. On top of cpu_sweep.py and large_batch.py:
#   python sweep.py configs/cpu_sweep.py configs/large_batch.py configs/pilot/no_exclusion.py --results_dir=results/study_pilot --data_dir=PATH_TO/cifar10
SWEEP_BATCH_SIZES = [8192]
SWEEP_WITH_LARS = [True]
SWEEP_PEAK_LRS = [0.02 / TRUST_COEF]
EXCLUDE_BN_BIAS = False
