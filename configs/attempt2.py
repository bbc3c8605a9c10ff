# Attempt 2 of the original README (full protocol: 200 epochs of torchvision's ResNet-50; needs a GPU).
#   python sweep.py configs/attempt2.py --data_dir=PATH_TO/cifar10
# Linear scaling: base LR 0.05 * k (0.05 at 128 to 3.2 at 8K), warm-up multiplier 2 over 5
# epochs, then poly(2) decay to 1e-5 * k; He initialisation. These are hyperparams.py's
# defaults (LR and END_LR follow K), spelled out here.
LR = BASE_LR * K
WARMUP_EPOCHS = 5
WARMUP_MULTIPLIER = 2.0
LR_SCHEDULE = "poly"
POLY_POWER = 2.0
END_LR = 1e-5 * K
HE_INIT = True
