# CPU-scale version of attempt 2, sized for a 2-core CPU: a cell (batch 128 to 8192, SGD or
# LARS) takes about 13 minutes on the Intel Xeon and 20 on the AMD EPYC of the README, so the
# 14 cells take 3 to 5 hours in total; resumable, so it can run in parts.
#   python sweep.py configs/cpu_sweep.py --data_dir=PATH_TO/cifar10
# He et al.'s ResNet-20 instead of ResNet-50, 20 epochs instead of 200 (at batch 8192 that is
# only 6 steps per epoch, 120 steps in all), 2 warm-up epochs instead of 5. Otherwise attempt
# 2: LR 0.05 * k, warm-up multiplier 2, poly(2) decay to 1e-5 * k, He init, momentum 0.9,
# weight decay 5e-4 (5e-3 with LARS), trust coefficient 0.1.
# Speed and memory: bf16 autocast, and micro-batches of 128 (batch-norm statistics per 128
# images, as on 8192 / 128 = 64 GPUs); benchmarks/train_throughput.py measured a one-batch step
# at 8192 about 3x slower per image on this CPU.
# Evaluation: precise BN over 20 micro-batches before each test, so that few, large steps do
# not leave stale running statistics (see the README).
# The large batches are the question, so their cells run first (tables sort by batch size).
SWEEP_BATCH_SIZES = [8192, 4096, 128, 2048, 1024, 512, 256]
MODEL = "resnet20"
NUM_EPOCHS = 20
WARMUP_EPOCHS = 2
AMP = True
MICRO_BATCH_SIZE = 128
PRECISE_BN = 20
