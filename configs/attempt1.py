# Attempt 1 of the original README (full protocol: 200 epochs of torchvision's ResNet-50; needs a GPU).
#   python sweep.py configs/attempt1.py --data_dir=PATH_TO/cifar10
# k = BATCH_SIZE / 128 (K here). Base LR 0.05 at every batch size; the warm-up multiplier is 2k,
# so after 5 warm-up epochs the LR is 0.1 * k (the linear scaling rule), then poly(2) decay to
# 1e-5 (not scaled). The README writes the multiplier as 2 * (2 ^ (k - 1)) with k the exponent
# of the batch multiple (batch = 128 * 2 ^ (k - 1)); that is 2 * B / 128 = 2k in our terms.
# No He initialisation: the README adds it from attempt 2 on.
LR = 0.05
WARMUP_MULTIPLIER = 2.0 * K
END_LR = 1e-5
HE_INIT = False
