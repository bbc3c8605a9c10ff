# Attempt 4 of the original README (full protocol: 200 epochs of torchvision's ResNet-50; needs a GPU).
#   python sweep.py configs/attempt4.py --data_dir=PATH_TO/cifar10
# Attempt 3 (LR 0.05 * k, warm-up multiplier 2 over 5 epochs, step decay x0.1 every 50 epochs
# after warm-up) with He initialisation.
LR = BASE_LR * K
WARMUP_MULTIPLIER = 2.0
LR_SCHEDULE = "step"
STEP_EPOCHS = 50
HE_INIT = True
