# Pilot run of the study (configs/large_batch.py): LARS at batch 8192 with the whole recipe at
# lr x tc = 0.05, which the original recipe trained worse than 0.02 at every epoch: does the
# recipe (longer warm-up from near 0, zero-initialised residuals) make a larger LR usable?
#   python sweep.py configs/cpu_sweep.py configs/large_batch.py configs/pilot/higher_lr.py --results_dir=results/study_pilot --data_dir=PATH_TO/cifar10
SWEEP_BATCH_SIZES = [8192]
SWEEP_WITH_LARS = [True]
SWEEP_PEAK_LRS = [0.05 / TRUST_COEF]
