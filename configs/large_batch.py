# The large-batch recipe of the tuned study, for SGD and LARS alike, with each optimizer's LR
# rule; on top of cpu_sweep.py, at any batch size:
#   python train.py configs/cpu_sweep.py configs/large_batch.py --batch_size=B [--with_lars=True] --data_dir=PATH_TO/cifar10
# The protocol stays cpu_sweep.py's (ResNet-20, 20 epochs, bf16, micro-batches of 128, precise
# BN); only the optimizer and its peak LR differ between SGD and LARS. The recipe is standard
# large-batch practice, kept whole by the pilot in configs/pilot/ (results/study_pilot/: at 8192
# LARS loses 17 points without the exclusion, 2.5 with the original warm-up, 1.6 without label
# smoothing; at 128 the warm-up does not cost SGD, 80.91 % without it against 82.03 %):
# - warm-up over 5 epochs (30 of 120 steps at 8K) from 2 % of the peak LR (multiplier 50), in
#   place of the original's 2 epochs from half the peak; then poly(2) decay as before;
# - label smoothing 0.1; the last BN of each residual block starts at gamma = 0 (Goyal et al.);
# - biases and BN weights: no weight decay (both optimizers) and no LARS adaptation;
# - weight decay 5e-4 for both optimizers (the original gave LARS 5e-3);
# - LARS trust coefficient 0.02. Only lr x tc matters for the adapted tensors; the excluded
#   ones step with the global LR, which tc = 0.02 keeps at SGD's scale (lr x tc = 0.02 is
#   lr = 1.0 for them; with the paper's 0.001 it would be 20).
WARMUP_EPOCHS = 5
WARMUP_MULTIPLIER = 50.0
LABEL_SMOOTHING = 0.1
ZERO_INIT_RESIDUAL = True
EXCLUDE_BN_BIAS = True
WEIGHT_DECAY = 5e-4
LARS_WEIGHT_DECAY = 5e-4
TRUST_COEF = 0.02
END_LR = 1e-5 * K
# Peak LR as a function of the batch size. PROVISIONAL: the pilot's starting points (LARS
# lr x tc = 0.02; SGD 0.1 at batch 128, growing as the square root of the batch) until the
# study's grid (configs/study.py) gives each optimizer's rule.
peak_lr = 0.02 / TRUST_COEF if WITH_LARS else 0.1 * (BATCH_SIZE / 128) ** 0.5
LR = peak_lr / WARMUP_MULTIPLIER
