# CPU preset: finishes on a 2-core CPU in about 7 minutes on the full 50,000 images (README).
# He et al.'s ResNet-20 for 10 epochs at batch 128 with a 1-epoch warm-up, in bf16 autocast
# (AMP) and channels-last; otherwise the main protocol (SGD, base LR 0.05 x2 after warm-up,
# poly(2) decay). Usage: python train.py configs/cpu.py --data_dir=PATH_TO/cifar10
MODEL = "resnet20"
NUM_EPOCHS = 10
WARMUP_EPOCHS = 1
AMP = True
