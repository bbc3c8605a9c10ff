# Attempt 3 of the original README (full protocol: 200 epochs of torchvision's ResNet-50; needs a GPU).
#   python sweep.py configs/attempt3.py --data_dir=PATH_TO/cifar10
# Attempt 2's LR (0.05 * k, warm-up multiplier 2 over 5 epochs), then a step schedule: the LR
# is multiplied by 0.1 every 50 epochs after warm-up. Our reading of "attempt 4 = attempt 3
# with He initialisation" is that attempt 3 ran without it, so HE_INIT is off here.
LR = BASE_LR * K
WARMUP_EPOCHS = 5
WARMUP_MULTIPLIER = 2.0
LR_SCHEDULE = "step"
STEP_EPOCHS = 50
STEP_GAMMA = 0.1
HE_INIT = False
