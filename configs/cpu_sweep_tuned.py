# Tuned LARS for the CPU sweep, applied on top of cpu_sweep.py:
#   python sweep.py configs/cpu_sweep.py configs/cpu_sweep_tuned.py --data_dir=PATH_TO/cifar10
# Why: the original's trust coefficient 0.1 was tuned with its LARS momentum effectively off.
# With momentum 0.9 accumulating, LARS moves each tensor by up to lr * 0.1 / (1 - 0.9) of its
# norm per step, 6.4x at the 8K peak LR of 6.4: in a first cpu_sweep run the 8K LARS training
# loss grew to 4e5 by epoch 6. The paper's trust coefficient 0.001 makes that 6.4 %.
# Only the LARS cells: SGD does not use the trust coefficient, so cpu_sweep's SGD cells apply.
TRUST_COEF = 0.001
SWEEP_WITH_LARS = [True]
# Large batches first: they are where trust coefficient 0.1 blew up (tables sort by batch size).
SWEEP_BATCH_SIZES = [8192, 4096, 2048, 1024, 128, 512, 256]
