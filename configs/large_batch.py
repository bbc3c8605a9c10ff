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
# Peak LR as a function of the batch size: one rule of the same form for both optimizers, fitted
# to the best LRs of the study's grid (configs/study.py, results/study/). Both grow as the square
# root of the batch from 128 up to 2048, and fall back as fast beyond it, where 20 epochs are
# fewer than 480 steps (the fall rests on one batch size, 8192: 120 steps). SGD starts at 0.4,
# LARS at lr x tc = 0.01 (peak LR 0.5). Grid bests at 128 / 512 / 2048 / 8192: LARS lr x tc
# 0.01 / 0.02 / 0.04 / 0.02, the rule's own values; SGD 0.4 / 1.6 / 1.6 / 0.8, the rule's but at
# 512 (0.8 there, 0.5 points below 1.6 at seed 0). Checked by one run each at 256 / 1024 / 4096,
# where it was not fitted: SGD 82.30 / 81.08 / 66.46 %, LARS 82.50 / 81.79 / 70.63 %, about what
# the grid's tuned bests either side give (README, "Tuned batch-size study").
turning_batch = 2048
effective_batch = min(BATCH_SIZE, turning_batch ** 2 / BATCH_SIZE)
peak_lr = (0.01 / TRUST_COEF if WITH_LARS else 0.4) * (effective_batch / 128) ** 0.5
LR = peak_lr / WARMUP_MULTIPLIER
